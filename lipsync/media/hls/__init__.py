"""Package an MP4 as adaptive HLS: a small ladder of fMP4 renditions, a master
playlist, a player page, and optionally a zip of it all.

    >>> from lipsync.media.hls import package_hls
    >>> r = package_hls(Path("talk.mp4"), Path("talk_hls"), zip_path=Path("talk_hls.zip"))
    >>> r.master, [(x.name, x.width, x.height) for x in r.renditions]

The layout written to ``outdir`` (and, with the same relative paths, to the zip)::

    master.m3u8            the variant list written here, with true CODECS strings
    720p/index.m3u8        one VOD media playlist per rendition ...
    720p/init.mp4          ... its fMP4 initialisation segment (moov, metadata tags)
    720p/seg_00001.m4s     ... and ~2 s media segments starting on aligned keyframes
    480p/ ...
    subs/index.m3u8        with captions: the subtitles rendition (segmented WebVTT,
    subs/seg_00001.vtt     cut where the video segments are cut)
    player.html            plays master.m3u8 with hls.js, native HLS as fallback, captions on
    hls.min.js             hls.js (Apache-2.0), hls.js-LICENSE.txt beside it
    README.txt             how to serve the folder

Only ffmpeg is needed (no ffprobe): the source is probed with ffmpeg's
``framecrc`` muxer, whose header lists each stream's codec, size and time base
and whose lines give every packet's timestamps. All renditions are encoded by
one ffmpeg process (``split`` + ``var_stream_map``), with the same forced
keyframes, so segment boundaries line up across renditions.

Nothing half-written is left behind: renditions are encoded into a staging
folder inside ``outdir`` and moved into place only when everything succeeded;
the zip is written under a temporary name and renamed.
"""

from .ladder import RUNGS, Rendition, avc1_codec, h264_level, plan_ladder
from .package import HlsResult, package_hls
from .probe import SourceInfo, probe

__all__ = ["package_hls", "HlsResult", "Rendition", "SourceInfo", "probe", "plan_ladder", "h264_level", "avc1_codec",
           "RUNGS"]
