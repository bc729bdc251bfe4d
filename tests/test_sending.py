"""What sending sessions over WebRTC costs, as admission reads it (the meter's arithmetic; the web tests see it
measure real aiortc encoders)."""

from __future__ import annotations

import threading
import time

import pytest

from lipsync.live.web import sending
from lipsync.live.web.sending import SendMeter


def burn(seconds: float) -> None:
    t = time.thread_time()
    while time.thread_time() - t < seconds:
        pass


def live_encoder(codec):
    """The encoder aiortc's sender makes for ``codec`` in a live session track's task."""
    from aiortc import rtcrtpsender

    token = sending.LIVE_TRACK.set(True)
    try:
        return rtcrtpsender.get_encoder(codec)
    finally:
        sending.LIVE_TRACK.reset(token)


def test_a_window_counts_codecs_the_drivers_and_the_loop_per_video_frame(monkeypatch):
    monkeypatch.setattr(sending, "WINDOW_S", 0.0)
    monkeypatch.setattr(sending, "WINDOW_FRAMES", 10)
    meter = SendMeter()
    meter.start()  # this thread stands for the event loop
    for _ in range(9):
        meter.handed(0.001)
        meter.coded(0.0015, picture=True)
        meter.coded(0.0005)  # its sound
    meter.handed(0.001)  # a frame the track dropped before its encoder took it: the unit is a picture encoded
    burn(0.05)  # the loop's own work: packets, encryption
    assert meter.tick() is None  # 9 pictures: too few to say
    meter.coded(0.0015, picture=True)
    meter.coded(0.0005)
    cost = meter.tick()
    assert cost is not None and cost.frames == 10
    assert cost.locked_s == pytest.approx(0.001 + 0.005, rel=0.3)  # the drivers' 10 ms and the loop's 50 ms / 10
    assert cost.cpu_s - cost.locked_s == pytest.approx(0.002)  # the codecs run off the lock
    # the next window moves the figure part of the way, not all of it
    for _ in range(10):
        meter.coded(0.012, picture=True)
    again = meter.tick()
    assert again.frames == 20
    assert again.cpu_s - again.locked_s == pytest.approx(0.002 + sending.EMA * 0.010, rel=0.05)


def test_only_the_loop_that_started_last_is_measured(monkeypatch):
    """Another thread's CPU clock never mixes in; an app launched again (a new loop) takes the meter over."""
    monkeypatch.setattr(sending, "WINDOW_S", 0.0)
    monkeypatch.setattr(sending, "WINDOW_FRAMES", 1)
    meter = SendMeter()
    meter.start()
    meter.coded(0.001, picture=True)
    t = threading.Thread(target=meter.tick)  # another thread's tick: its clock is not the loop's
    t.start()
    t.join()
    assert meter.cost is None
    t = threading.Thread(target=meter.start)  # a new loop starts: the window begins again there
    t.start()
    t.join()
    meter.coded(0.001, picture=True)
    assert meter.tick() is None  # this thread's ticks no longer count


def test_the_codec_hook_times_aiortcs_encoders_and_passes_their_settings_through():
    pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")
    import fractions

    import av
    import numpy as np
    from aiortc import rtcrtpsender
    from aiortc.codecs.vpx import Vp8Encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    sending.watch_codecs()
    sending.watch_codecs()  # once is enough: a second call wraps nothing twice
    before, pictures = sending.SENDING.coded_total_s, sending.SENDING.frames_total
    enc = live_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000))
    enc.target_bitrate = 600_000  # what the sender does with the visitor's bandwidth reports
    assert enc.target_bitrate == 600_000 and enc._inner.target_bitrate == 600_000
    frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90_000)
    payloads, _ = enc.encode(frame, False)
    assert payloads and sending.SENDING.coded_total_s > before and sending.SENDING.frames_total == pictures + 1
    # a sender that is not a live session's track keeps aiortc's own VP8 encoder (timed)
    theirs = rtcrtpsender.get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000))._inner
    assert type(theirs) is Vp8Encoder  # not the live subclass


def test_the_live_vp8_encoder_sends_pictures_a_decoder_shows_and_follows_the_visitors_bitrate():
    pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")
    import fractions

    import av
    import cv2
    import numpy as np
    from aiortc.codecs.vpx import Vp8Decoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from lipsync.live.web.vp8 import TalkingHeadVp8

    sending.watch_codecs()
    enc = live_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000))
    assert isinstance(enc._inner, TalkingHeadVp8)
    rng = np.random.default_rng(0)
    base = cv2.resize((rng.random((12, 12, 3)) * 255).astype(np.uint8), (96, 96), interpolation=cv2.INTER_CUBIC)
    dec = Vp8Decoder()
    psnr, keys = [], []
    for i in range(12):
        rgb = np.roll(base, i, axis=1)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90_000)
        if i == 6:
            enc.target_bitrate = 1_000_000  # the visitor reports more room: the encoder is opened again at it
        payloads, timestamp = enc.encode(frame, force_keyframe=i == 8)
        assert timestamp == i * 3600 and payloads
        data = b"".join(vp8_depayload(p) for p in payloads)
        keys.append(data[0] & 1 == 0)  # a VP8 keyframe's first bit is 0
        (shown,) = dec.decode(JitterFrame(data=data, timestamp=timestamp))
        err = np.mean((shown.to_ndarray(format="rgb24").astype(float) - rgb) ** 2)
        psnr.append(10 * np.log10(255**2 / max(err, 1e-6)))
    assert min(psnr) > 25, psnr  # what the visitor's decoder shows is the picture (a wrong one: about 10 dB)
    assert keys[0] and keys[6] and keys[8] and not any(keys[1:6]) and not keys[7]
    assert enc._inner.codec.bit_rate == 1_000_000


def test_the_live_vp8_encoder_follows_a_region_that_changes_slowly():
    """The encoder leaves blocks that barely changed uncoded (libvpx's static threshold); a region that drifts
    by one grey level a picture must still reach the visitor, not stay as it was (with a threshold too high it
    lagged by 7-20 levels)."""
    pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")
    import fractions

    import av
    import cv2
    import numpy as np
    from aiortc.codecs.vpx import Vp8Decoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    from lipsync.live.web.vp8 import TalkingHeadVp8

    enc, dec = TalkingHeadVp8(), Vp8Decoder()
    rng = np.random.default_rng(0)
    base = cv2.resize((rng.random((24, 24, 3)) * 200).astype(np.uint8), (192, 192), interpolation=cv2.INTER_CUBIC)
    lag = []
    for i in range(40):
        rgb = base.copy()
        rgb[64:128, 64:128] += np.uint8(i)  # a slow change: one grey level a picture (below 255: no overflow)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90_000)
        payloads, stamp = enc.encode(frame)
        (shown,) = dec.decode(JitterFrame(data=b"".join(vp8_depayload(p) for p in payloads), timestamp=stamp))
        got = shown.to_ndarray(format="rgb24").astype(float)
        lag.append(float(np.mean(rgb[64:128, 64:128] - got[64:128, 64:128])))
    assert max(abs(x) for x in lag[5:]) < 4, lag


def test_the_live_voice_goes_out_as_one_mono_40_ms_packet_a_picture_that_decodes_to_the_voice():
    pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")
    import fractions

    import av
    import numpy as np
    from aiortc import rtcrtpsender
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from lipsync.live.web.opus import SpeechOpus
    from lipsync.live.web.peer import AudioPackets

    sending.watch_codecs()
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2)
    enc = live_encoder(opus)
    assert isinstance(enc._inner, SpeechOpus)
    # any other sender in the process (an app's own stream, a Pipecat transport) keeps aiortc's encoder, timed
    assert type(rtcrtpsender.get_encoder(opus)._inner) is OpusEncoder
    t = np.arange(48_000) / 48_000
    voice = (8000 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.int16)
    packets, stamps = [], []
    cut = AudioPackets(48_000)
    for k in range(25):  # a second of pictures' sound, 40 ms each, as the session hands it
        (frame,) = cut(voice[k * 1920 : (k + 1) * 1920])
        payloads, stamp = enc.encode(frame)
        assert len(payloads) <= 1  # one packet a picture: one trip through the sender, one timestamp
        if payloads:
            packets.append(payloads[0])
            stamps.append(stamp)
    assert len(packets) >= 24 and np.all(np.diff(stamps) == 1920)
    assert all(p[0] & 0x04 == 0 for p in packets)  # the TOC byte's stereo flag is off: mono, as a voice is
    dec = OpusDecoder()  # what the browser plays (it decodes to stereo)
    heard = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for p, s in zip(packets, stamps)
                            for f in dec.decode(JitterFrame(data=p, timestamp=s))]).astype(float)
    lag = int(np.argmax([np.dot(heard[d : d + 24_000], voice[:24_000]) for d in range(0, 1000)]))
    ref = voice[: len(heard) - lag].astype(float)
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((heard[lag:] - ref) ** 2))
    assert snr > 10, snr  # the voice, not noise or silence (a wrong decode: below 0 dB)
    ready = av.Packet(packets[1])  # a track that hands sound already encoded: sent as it is
    ready.pts, ready.time_base = 1920, fractions.Fraction(1, 48_000)
    assert enc.pack(ready) == ([packets[1]], 1920)
    other = SpeechOpus()  # sound at another rate (a caller's own track) is resampled and cut to 40 ms as well
    stamps = [other.encode(f)[1] for f in AudioPackets(16_000)(np.zeros(16_000, np.int16))]
    assert np.all(np.diff([s for s in stamps if s is not None]) == 1920) and len(stamps) == 25


def test_the_sound_packets_level_is_aiortcs_summed_in_numpy():
    pytest.importorskip("aiortc", reason="the live extra is not installed (pip install .[live])")
    import math
    import struct

    import av
    import numpy as np
    from aiortc import rtp

    def rfc6465(frame):  # RFC 6465 appendix A, as aiortc computes it sample by sample
        buf = bytes(frame.planes[0])
        rms = math.sqrt(sum(s[0] * s[0] for s in struct.iter_unpack("h", buf)) / (frame.samples * 32767**2))
        return round(min(0, max(-127, 20 * math.log10(rms)))) if rms > 0 else -127

    sending.watch_codecs()
    assert rtp.compute_audio_level_dbov is sending.audio_level_dbov  # what aiortc's sender calls for each packet
    rng = np.random.default_rng(1)
    for amp in (0, 1, 30, 1000, 30_000):
        for layout, ch in (("mono", 1), ("stereo", 2)):
            x = (rng.standard_normal(960 * ch) * amp).clip(-32768, 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(x[None, :], format="s16", layout=layout)
            assert rtp.compute_audio_level_dbov(frame) == rfc6465(frame), (amp, layout)
