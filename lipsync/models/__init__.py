"""Networks and their checkpoint loader."""

from .loading import load_wav2lip, read_state_dict
from .wav2lip import Wav2Lip

__all__ = ["Wav2Lip", "load_wav2lip", "read_state_dict"]
