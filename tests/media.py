"""Test clips: cut from ../shared/media when present, generated otherwise; plus broken files.

ffmpeg comes from the imageio-ffmpeg wheel (a test dependency), for the clips OpenCV cannot
write: rotation metadata, variable frame rate, audio only, H.264.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

from tests.golden import MEDIA

VTEST = MEDIA / "vtest.avi"


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def source_frames(n: int, size: tuple[int, int] = (384, 288)) -> list[np.ndarray]:
    """n BGR frames of real street footage (vtest.avi) resized, or drawn figures without ../shared."""
    frames: list[np.ndarray] = []
    if VTEST.exists():
        cap = cv2.VideoCapture(str(VTEST))
        while len(frames) < n:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.resize(frame, size))
        cap.release()
    w, h = size
    while len(frames) < n:
        i = len(frames)
        frame = np.full((h, w, 3), 90, np.uint8)
        for k in range(2):  # two walking stick figures
            x = int(40 + k * 150 + 3 * i)
            cv2.circle(frame, (x, 60), 12, (200, 180, 160), -1)
            cv2.rectangle(frame, (x - 14, 74), (x + 14, 150), (60, 60, 160), -1)
            cv2.line(frame, (x - 8, 150), (x - 14, 220), (40, 40, 40), 6)
            cv2.line(frame, (x + 8, 150), (x + 14, 220), (40, 40, 40), 6)
        frames.append(frame)
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0, *, codec: str = "mpeg4", gop: int = 2) -> Path:
    """Encode BGR frames with FFmpeg. A keyframe every `gop` frames (default 2): shards start on
    keyframes, so the tests' short clips still split into many shards. `codec="libx264"` adds
    B-frames (decode order differs from display order), as most real footage has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:  # a machine with only PyAV (the GPU machine: infra/gpu/measure.sh)
        return _write_clip_pyav(path, frames, fps, codec=codec, gop=gop)
    args = ["-c:v", "mpeg4", "-q:v", "3", "-bf", "0"] if codec == "mpeg4" else \
        ["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-x264-params", "open-gop=0:scenecut=0"]
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
                    "-r", str(fps), "-i", "-", *args, "-g", str(gop), "-keyint_min", str(gop), "-pix_fmt", "yuv420p",
                    str(path)], input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    return path


def _write_clip_pyav(path: Path, frames: list[np.ndarray], fps: float, *, codec: str, gop: int) -> Path:
    """write_clip's encoding through PyAV's bundled FFmpeg (same codecs and keyframe spacing)."""
    from fractions import Fraction

    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4" if codec == "mpeg4" else "libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = 0 if codec == "mpeg4" else 2
        if codec == "mpeg4":
            stream.codec_context.qscale = 3
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")))
        container.mux(stream.encode())
    return path


def street_clip(path: Path, n: int = 12, size: tuple[int, int] = (384, 288), fps: float = 10.0) -> Path:
    return write_clip(path, source_frames(n, size), fps)


def blank_clip(path: Path, n: int = 6, size: tuple[int, int] = (320, 240)) -> Path:
    """A clip with nobody in it: a plain wall."""
    return write_clip(path, [np.full((size[1], size[0], 3), 128, np.uint8) for _ in range(n)])


def rotated_clip(path: Path, src: Path, degrees: int = 90) -> Path:
    """src re-muxed with rotation metadata (as phones write it)."""
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-display_rotation", str(degrees), "-i", str(src),
                    "-c", "copy", str(path)], check=True)
    return path


def vfr_clip(path: Path, src: Path) -> Path:
    """src re-timed: frames 0-5 every 0.1 s, then every 0.3 s (a variable frame rate stream)."""
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-i", str(src), "-vf",
                    "setpts='if(lt(N,6),N*0.1,0.6+(N-6)*0.3)/TB'", "-fps_mode", "passthrough",
                    "-c:v", "mpeg4", "-q:v", "5", str(path)], check=True)
    return path


def audio_only(path: Path) -> Path:
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-c:a", "aac", str(path)], check=True)
    return path


def broken_files(folder: Path) -> dict[str, str]:
    """Files that are not readable videos; name -> what is wrong with it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is a text file, not a video\n")
    good = street_clip(folder / ".tmp_full.mp4", n=12)
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    good.unlink()
    audio_only(folder / "audio_only.mp4")
    return {"empty.mp4": "empty", "notes.mp4": "not a video", "truncated.mp4": "truncated", "audio_only.mp4": "no video stream"}


def hostile_files(folder: Path) -> dict[str, str]:
    """Files a hostile pass found decord misreports or crashes on; name -> what the reason must say."""
    folder.mkdir(parents=True, exist_ok=True)
    ok, jpeg = cv2.imencode(".jpg", source_frames(1)[0])
    (folder / "photo.mp4").write_bytes(jpeg.tobytes())                  # a still image renamed .mp4
    good = street_clip(folder / ".tmp_src.mp4", n=6)
    data = bytearray(good.read_bytes())
    moov = data.find(b"moov")
    data[moov + 8:moov + 400] = bytes(range(256)) + bytes(range(136))  # the stream table overwritten
    (folder / "corrupt.mp4").write_bytes(bytes(data))
    # A 1e9 s offset: decord sizes its index from the duration and aborts with std::bad_alloc.
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-i", str(good), "-c", "copy",
                    "-output_ts_offset", "1000000000", str(folder / "late.mkv")], check=True)
    good.unlink()
    audio_only(folder / "sound.mp4")
    return {"photo.mp4": "still image", "corrupt.mp4": "corrupt", "late.mkv": "implausible",
            "sound.mp4": "no video stream"}


# -- clips whose timestamps, index or geometry are unusual (issue 19) ---------------------------------

def _ffmpeg(*args: object) -> None:
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", *map(str, args)], check=True)


def decoded_count(path: Path) -> int:
    """Frames PyAV's FFmpeg decodes from `path` in one plain pass from the first byte (no seek): the truth."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def joined_ts(path: Path, first: Path, second: Path) -> Path:
    """`cat first.ts second.ts > path`: one MPEG-TS file whose timestamps restart half-way (both parts
    start at the same time), as cameras and `cat` make them."""
    parts = []
    for src in (first, second):
        part = path.with_name(f".{src.stem}-{path.stem}.ts")
        _ffmpeg("-i", src, "-c", "copy", part)
        parts.append(part.read_bytes())
        part.unlink()
    path.write_bytes(b"".join(parts))
    return path


def joined_mpeg_ps(path: Path, first: Path, second: Path) -> Path:
    """`cat first.mpg second.mpg > path`: MPEG-2 program streams (DVD/camcorder .mpg) joined, timestamps restarting."""
    parts = []
    for src in (first, second):
        part = path.with_name(f".{src.stem}-{path.stem}.mpg")
        _ffmpeg("-i", src, "-c:v", "mpeg2video", "-q:v", "4", "-g", "4", "-f", "mpeg", part)
        parts.append(part.read_bytes())
        part.unlink()
    path.write_bytes(b"".join(parts))
    return path


def wrapped_ts(path: Path, src: Path) -> Path:
    """src as MPEG-TS whose 33-bit 90 kHz clock wraps (passes 2**33 / 90000 s) in its first second."""
    _ffmpeg("-i", src, "-c", "copy", "-output_ts_offset", "95442", path)
    return path


def elementary_h264(path: Path, src: Path) -> Path:
    """src's H.264 as a raw Annex B stream (no container, no timestamps), written under `path`'s name."""
    _ffmpeg("-i", src, "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", path)
    return path


def edit_list_mp4(path: Path, src: Path, start_s: float = 0.35) -> Path:
    """src cut at `start_s` without re-encoding: the MP4 keeps the GOP's earlier samples and an edit
    list that discards them (the index holds more samples than the video shows)."""
    _ffmpeg("-ss", start_s, "-i", src, "-c", "copy", path)
    return path


def sized_clip(path: Path, width: int, height: int, n: int = 3) -> Path:
    """An FFV1 (lossless, any size, odd and 1 px included) clip of `width` x `height` pixels."""
    frames = [np.full((height, width, 3), 40 + 50 * i, np.uint8) for i in range(n)]
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
                    "-r", "10", "-i", "-", "-c:v", "ffv1", "-pix_fmt", "bgr0", str(path)],
                   input=b"".join(f.tobytes() for f in frames), check=True)
    return path


def flat_clip(path: Path, width: int, height: int, seconds: float = 0.2) -> Path:
    """A grey FFV1 clip drawn by FFmpeg itself (no raw frames through a pipe): huge sizes in a small file."""
    _ffmpeg("-f", "lavfi", "-i", f"color=c=gray:s={width}x{height}:d={seconds}:r=10", "-c:v", "ffv1", path)
    return path


def resolution_change_ts(path: Path, n: int = 6) -> Path:
    """An MPEG-TS whose picture size changes mid-stream: n frames of 160x120, then n of 320x240."""
    small = write_clip(path.with_name(f".small-{path.stem}.mp4"), source_frames(n, (160, 120)), codec="libx264")
    large = write_clip(path.with_name(f".large-{path.stem}.mp4"), source_frames(n, (320, 240)), codec="libx264")
    joined_ts(path, small, large)
    small.unlink()
    large.unlink()
    return path
