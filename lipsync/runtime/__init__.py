"""Running the network: device, precision, the torch fast path."""

from .generator import PRECISIONS, Generator, resolve_device, resolve_precision

__all__ = ["PRECISIONS", "Generator", "resolve_device", "resolve_precision"]
