"""Decoding videos with PyAV (FFmpeg) from local files or any object store, a shard at a time.

Why PyAV, not decord, in the job (README, *Decoding*): decord indexes a video by reading every packet
of it when it opens, so each shard of a remote video downloaded all of it; PyAV reads through a
Python file object (`pipeline.io.objects.RangeReader`: bounded ranged GETs) and seeks by the
container's own index, so a shard reads the container header and the bytes it decodes. Measured on
this project's machines, the two decode at the same speed and give the same frames and timestamps
(decord stays the reference in the tests and in `posepipe bench`).

The probe (`probe_video`) reads the header once and learns everything the runner plans with: frame
count, keyframes (shards start on them, so no shard decodes bytes another shard also decodes), the
byte offset of each keyframe (a shard stops reading where the next one's bytes begin) and the
displayed geometry. The header bytes it read travel with the shards, which then open without
fetching them again. Frames come out as BGR uint8 (the models' OpenCV convention) after rotation
metadata, in windows, each frame with the stream's own presentation time.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from posepipe.pipeline.io.objects import ObjectReadError, RangeReader, open_ranged
from posepipe.pipeline.io.redaction import redact, scrub
from posepipe.pipeline.io.sources import is_remote

# Past these a container's timestamps are not a real recording's (a 1e9 s Matroska duration made
# decord abort the process with std::bad_alloc). MPEG-TS clocks wrap at 26.5 h: real streams stay far below.
MAX_PLAUSIBLE_SECONDS = 1e7
# The largest frame decoded: 8192x4352, H.264/HEVC level 6.2's maximum picture size (35,651,584 luma
# samples). A window of frames is held in memory as BGR (3 bytes a pixel): 32 such frames are 3.4 GB.
# A larger frame (an FFV1 or raw video can declare 16384x16384 in a few kilobytes) would exhaust a
# worker's memory; it is refused at probe time with its size in words. Every smaller size is
# processed, down to 1x1: a frame too small to hold a person gives a committed video with no rows.
MAX_FRAME_PIXELS = 8192 * 4352
# MPEG-TS timestamps are a 33-bit 90 kHz clock that wraps every 26.5 h; a file that holds a wrap is
# read in order (VideoInfo.sequential).
MPEGTS_WRAP = 1 << 33
# FFmpeg demuxers that read one still image (an image renamed .mp4 opens as a one-frame "video").
_IMAGE_FORMATS = ("_pipe", "image2", "webp", "apng")
# Decode threads per open video. FFmpeg's frame threading scales H.264/HEVC decoding with cores; the
# worker passes the CPUs it was given (README, *Decoding*, for the measured scaling).
DEFAULT_DECODE_THREADS = 1


class VideoError(RuntimeError):
    """This file cannot be decoded as a video; the message says why."""


class VideoReadError(VideoError):
    """The video's bytes could not be read. `transient`: the store was failing or unreachable, not
    the file at fault, so the runner tries again later instead of recording a failure."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def __reduce__(self):  # noqa: ANN204 - keep `transient` across Ray's pickling
        return (type(self), (str(self),), {"transient": self.transient})


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int    # as displayed (rotation metadata applied)
    height: int
    duration_s: float
    keyframes: tuple[int, ...] = (0,)          # frame indices decoding can start at, ascending
    keyframe_dts: tuple[int, ...] = (0,)       # their decode times, in the stream's time base (for seeking)
    keyframe_offsets: tuple[int, ...] = (0,)   # their byte offsets in the file (-1: unknown)
    rotation: int = 0                          # degrees counter-clockwise, as FFmpeg's display matrix says
    indexed: bool = True                       # False: the container has no frame index; the probe scanned packets
    sequential: bool = False                   # True: timestamps restart or are missing; decoded from frame 0, never by seeking

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VideoInfo":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Probe:
    info: VideoInfo
    header: dict[int, bytes] = field(default_factory=dict)   # byte ranges read to open the container


def shard_bounds(info: VideoInfo, shard_frames: int) -> list[tuple[int, int]]:
    """[start, stop) frame ranges of about `shard_frames` frames, each starting on a keyframe.

    A shard that started mid-GOP would decode (and read) frames from the keyframe before it, which
    the shard before it also reads. So every boundary is moved down to the nearest keyframe; a GOP
    longer than `shard_frames` becomes one shard of its own.
    """
    if info.num_frames <= 0:
        return []
    keyframes = np.asarray(info.keyframes or (0,))
    bounds: list[int] = [0]
    for nominal in range(shard_frames, info.num_frames, shard_frames):
        snapped = int(keyframes[np.searchsorted(keyframes, nominal, side="right") - 1])
        if snapped > bounds[-1]:
            bounds.append(snapped)
    bounds.append(info.num_frames)
    return list(zip(bounds[:-1], bounds[1:]))


def _end_offset(info: VideoInfo, stop: int, size: int | None) -> int | None:
    """Where the bytes of frames before `stop` end: the next keyframe's offset (None: unknown)."""
    keyframes = np.asarray(info.keyframes)
    i = int(np.searchsorted(keyframes, stop, side="left"))
    if i >= len(keyframes):
        return size
    offset = info.keyframe_offsets[i] if i < len(info.keyframe_offsets) else -1
    return int(offset) if offset >= 0 else None


def _merge(recorded: Mapping[int, bytes]) -> dict[int, bytes]:
    """Adjacent or overlapping recorded reads joined into as few ranges as possible."""
    merged: list[tuple[int, bytearray]] = []
    for start, data in sorted(recorded.items()):
        if merged and start <= merged[-1][0] + len(merged[-1][1]):
            head, buf = merged[-1]
            overlap = head + len(buf) - start
            buf.extend(data[overlap:])
        else:
            merged.append((start, bytearray(data)))
    return {start: bytes(buf) for start, buf in merged}


def _container_problem(container: Any, video: Any) -> str | None:
    name = container.format.name or ""
    if any(tag in name for tag in _IMAGE_FORMATS):
        return f"a still image ({name.replace('_pipe', '')}), not a video"
    for label, micros in (("duration", container.duration), ("start time", container.start_time)):
        if micros is not None and abs(micros) / 1e6 > MAX_PLAUSIBLE_SECONDS:
            return (f"implausible container {label} ({micros / 1e6:.3g} s): corrupt or unsupported "
                    "timestamps; re-mux the file with reset timestamps "
                    "(ffmpeg -i IN -c copy -avoid_negative_ts make_zero OUT)")
    return None


def _read_failure(uri: str, exc: BaseException) -> VideoError:
    import av

    reading = exc if isinstance(exc, ObjectReadError) else (exc.__cause__ or exc.__context__)
    if isinstance(reading, ObjectReadError):  # PyAV re-raises what our reader raised, or chains it
        return VideoReadError(f"could not read {redact(uri)}: {reading}", transient=reading.transient)
    if isinstance(exc, av.error.FFmpegError):
        detail = (exc.strerror or str(exc)).rstrip(".")
        return VideoError(f"not a readable video container (truncated, corrupt or not a video: {detail})")
    if isinstance(exc, OSError):
        return VideoError(f"could not read {redact(uri)}: {exc.strerror or scrub(str(exc))}")
    return VideoError(f"could not read {redact(uri)}: {type(exc).__name__}: {scrub(str(exc))[:300]}")


def _open_container(uri: str, reader: Any) -> tuple[Any, Any]:
    """The container and its first video stream, or a VideoError saying why there is none."""
    import av

    try:
        container = av.open(reader, mode="r", metadata_errors="ignore")
    except Exception as exc:
        raise _read_failure(uri, exc) from None
    streams = list(container.streams)
    video = [s for s in streams if s.type == "video"]
    if not streams:
        container.close()
        raise VideoError("corrupt container: its header lists no streams (damaged or truncated file)")
    if not video:
        kinds = ", ".join(sorted({f"{s.type} ({s.codec_context.name})" if s.codec_context else s.type for s in streams}))
        container.close()
        raise VideoError(f"no video stream (the file holds only {kinds})")
    problem = _container_problem(container, video[0])
    if problem:
        container.close()
        raise VideoError(problem)
    return container, video[0]


def _bgr(frame: Any, rotation: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """The frame as a BGR uint8 image, rotated as displayed. With `size` (the stream's coded width
    and height), a frame of another size is scaled to it first: a stream whose resolution changes
    mid-way comes out in the one geometry its probe recorded (as the ffmpeg tool scales it), so
    every row's pixel coordinates, every batch of frames and every render share one frame size."""
    if size is not None and (frame.width, frame.height) != size:
        image = frame.to_ndarray(format="bgr24", width=size[0], height=size[1])
    else:
        image = frame.to_ndarray(format="bgr24")
    if rotation % 360:
        image = np.ascontiguousarray(np.rot90(image, k=(rotation // 90) % 4))
    return image


def _frame_time(frame: Any, time_base: Any) -> float:
    """The frame's presentation time in seconds, in its stream's time base. (Frames a flush drains
    from the decoder carry no time base of their own in PyAV, so the stream's is used.)"""
    return float(frame.pts * time_base) if frame.pts is not None and time_base is not None else float("nan")


def _open_reader(uri: str, known: Mapping[int, bytes] | None = None) -> RangeReader:
    try:
        reader = open_ranged(uri, known=known)
    except Exception as exc:
        raise _read_failure(uri, exc) from None
    if reader.size == 0:
        reader.close()
        raise VideoError("the file is empty (0 bytes)")
    return reader


def probe_video(uri: str) -> Probe:
    """What the runner needs to plan `uri`'s shards, from its header (and, for containers without a
    frame index such as Matroska, one pass over its packets). Raises VideoError for a non-video.

    One pass from the first byte, never a seek: the first frame is decoded from the first packets,
    and (without an index) the packets are counted in that same pass. A seek back to the start, as
    an earlier version made, lands by timestamp, and a file whose timestamps restart (two MPEG-TS
    files joined with `cat`) has that timestamp twice: the count began in the second part.
    Timestamps that go backwards, or keyframes without any, make the video *sequential*: one shard,
    decoded from the start without a seek (`VideoInfo.sequential`), so no frame is read from the
    wrong place and none is counted twice or missed.
    """
    reader = _open_reader(uri)
    reader.recorded = {}
    with contextlib.closing(reader):
        container, stream = _open_container(uri, reader)
        with container:
            declared = stream.codec_context
            if declared.width and declared.height:  # refused before a frame that size is decoded
                _check_pixels(int(declared.width), int(declared.height))
            # An edit list's discarded samples are in the index (and the stream's frame count) but
            # never come out of the decoder: they are no frames of the video.
            every_entry = list(stream.index_entries)
            entries = [e for e in every_entry if not e.is_discard]
            indexed = stream.frames > 0 and len(every_entry) == stream.frames
            scan = _PacketScan(count=not indexed)
            first = None
            header: dict[int, bytes] = {}
            try:
                for packet in container.demux(stream):
                    if first is None:
                        try:
                            first = next(iter(packet.decode()), None)
                        except Exception as exc:
                            raise _probe_failure(uri, exc, "decoded") from None
                        if first is not None:
                            if is_remote(uri):  # what opening cost, to spare every shard the same reads
                                header = _merge(reader.recorded or {})  # the first packets too: shard 0 needs them
                            reader.recorded = None
                    scan.add(packet)
                    if first is not None and indexed:
                        break
            except VideoError:
                raise
            except Exception as exc:
                failure = _probe_failure(uri, exc, "read")
                if first is None or scan.frames == 0 or isinstance(failure, VideoReadError):
                    raise failure from None
                # else a damaged tail: the frames before it are counted (decoding them will tell)
            reader.recorded = None
            if first is None:
                raise VideoError("the file has no decodable video frames")
            rotation = int(first.rotation or 0) if hasattr(first, "rotation") else 0
            image = _bgr(first, rotation)
            height, width = _check_geometry(image)
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            if indexed:
                keys = [(i, e.timestamp, e.pos) for i, e in enumerate(entries) if e.is_keyframe]
                num_frames = len(entries)
                sequential = not _increasing([e.timestamp for e in every_entry])
            else:  # no frame index (Matroska, WebM, MPEG-TS, ...): the packets counted above
                keys, num_frames, sequential = scan.keys, scan.frames, scan.sequential
                if "mpegts" in (container.format.name or "") and scan.wraps(MPEGTS_WRAP):
                    sequential = True
            if num_frames <= 0:
                raise VideoError("the file has no decodable video frames")
            if not keys or keys[0][0] != 0:
                keys.insert(0, (0, None, -1))
            if any(k[1] is None for k in keys[1:]):  # a keyframe no seek can aim at
                sequential = True
            if sequential:
                keys = [(0, keys[0][1], keys[0][2])]
            duration = float(stream.duration * stream.time_base) if stream.duration else (num_frames / fps if fps else 0.0)
            info = VideoInfo(
                num_frames=num_frames, fps=fps, width=int(width), height=int(height), duration_s=duration,
                keyframes=tuple(k[0] for k in keys), keyframe_dts=tuple(-1 if k[1] is None else int(k[1]) for k in keys),
                keyframe_offsets=tuple(int(k[2]) for k in keys), rotation=rotation, indexed=indexed,
                sequential=sequential,
            )
    return Probe(info=info, header=header)


def _probe_failure(uri: str, exc: BaseException, what: str) -> VideoError:
    """A read that failed (the store: transient or not) as such; anything else as this stream's fault."""
    failure = _read_failure(uri, exc)
    if isinstance(failure, VideoReadError):
        return failure
    return VideoError(f"the video stream cannot be {what}: {_decode_detail(exc)}")


def _increasing(stamps: list[int | None]) -> bool:
    """Whether the timestamps that are known strictly increase (in file order)."""
    known = [t for t in stamps if t is not None]
    return all(b > a for a, b in zip(known, known[1:]))


class _PacketScan:
    """Counts a stream's packets (one a frame), notes its keyframes, and watches its decode times:
    one that is not above the one before means the timestamps restarted or wrapped uncorrected."""

    def __init__(self, *, count: bool) -> None:
        self.count = count
        self.frames = 0
        self.keys: list[tuple[int, int | None, int]] = []
        self.sequential = False
        self._first_dts: int | None = None
        self._last_dts: int | None = None

    def wraps(self, period: int) -> bool:
        """Whether the decode times cross a multiple of `period`: FFmpeg corrects a clock wrap as it
        reads, but its seeks cannot cross one."""
        if self._first_dts is None or self._last_dts is None:
            return False
        return self._first_dts // period != self._last_dts // period

    def add(self, packet: Any) -> None:
        if not self.count or packet.size == 0 or packet.is_discard:
            return
        if packet.dts is not None:
            if self._last_dts is not None and packet.dts <= self._last_dts:
                self.sequential = True
            self._first_dts = packet.dts if self._first_dts is None else self._first_dts
            self._last_dts = packet.dts
        if packet.is_keyframe:
            self.keys.append((self.frames, packet.dts if packet.dts is not None else packet.pts,
                              packet.pos if packet.pos is not None else -1))
        self.frames += 1


def _check_geometry(image: np.ndarray) -> tuple[int, int]:
    """(height, width) of a decoded first frame, or a VideoError that says what is wrong in words."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise VideoError("its frames do not convert to colour images (an unsupported pixel format or a corrupt "
                         "stream); re-encode it (ffmpeg -i IN -pix_fmt yuv420p OUT)")
    height, width = int(image.shape[0]), int(image.shape[1])
    if height < 1 or width < 1:
        raise VideoError(f"its frames are {width}x{height} pixels, an empty picture (a corrupt stream)")
    _check_pixels(width, height)
    return height, width


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise VideoError(
            f"the video is {width}x{height} pixels ({width * height:,} a frame); posepipe decodes at most "
            f"{MAX_FRAME_PIXELS:,} pixels a frame (8192x4352, the largest frame of H.264 and HEVC level 6.2). "
            "Scale it down first, e.g. ffmpeg -i IN -vf scale=3840:-2 OUT")


def _decode_detail(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return scrub(str(text)).rstrip(".")[:300]


def valid_timestamps(stamps: np.ndarray) -> bool:
    """Whether per-frame presentation times can be trusted: finite, not negative, in order.

    AVI and some raw streams carry no real presentation times (or decode-order ones); their frames
    are then timed `frame_index / fps` instead (`grid_timestamps`)."""
    stamps = np.asarray(stamps, dtype=np.float64)
    return bool(len(stamps) == 0 or (np.isfinite(stamps).all() and (stamps >= -1e-6).all()
                                     and (np.diff(stamps) >= -1e-9).all()))


def grid_timestamps(frame_index: np.ndarray, fps: float) -> np.ndarray:
    return np.asarray(frame_index, dtype=np.float64) / (fps if fps > 0 else 30.0)


class VideoStream:
    """An open video: `info`, and frame windows from `frames(start, stop)`.

    `info` and `header` (from `probe_video`) save the open from probing again; without them the
    stream probes itself.
    """

    def __init__(self, uri: str, *, info: VideoInfo | None = None, header: Mapping[int, bytes] | None = None,
                 threads: int = DEFAULT_DECODE_THREADS) -> None:
        self.uri = uri
        self.info = info if info is not None else probe_video(uri).info
        self.threads = max(1, int(threads))
        self._reader = _open_reader(uri, known=header)
        try:
            self._container, self._stream = _open_container(uri, self._reader)
        except BaseException:
            self._reader.close()
            raise
        if self.threads > 1:
            self._stream.thread_type = "FRAME"
            self._stream.thread_count = self.threads
        self._timestamps: np.ndarray | None = None
        self._fresh = True   # nothing decoded yet: frame 0 needs no seek
        turned = self.info.rotation % 180 == 90
        self._coded_size = (self.info.height, self.info.width) if turned else (self.info.width, self.info.height)

    @property
    def bytes_fetched(self) -> int:
        """Bytes this stream read from the file or object (the shared header not included)."""
        return self._reader.bytes_fetched

    @property
    def timestamps(self) -> np.ndarray:
        """Every frame's presentation time in seconds (decodes the whole video once: tests, render)."""
        if self._timestamps is None:
            stamps = np.concatenate([s for _, _, s in self.frames(0, self.info.num_frames, window=64)]) \
                if self.info.num_frames else np.zeros(0)
            self._timestamps = stamps if valid_timestamps(stamps) else grid_timestamps(np.arange(len(stamps)), self.info.fps)
        return self._timestamps

    def frames(self, start: int, stop: int, window: int = 32) -> Iterator[tuple[np.ndarray, list[np.ndarray], np.ndarray]]:
        """Yield (frame indices, BGR frames, presentation times in s) in windows of at most `window`.

        Decoding starts at the keyframe at or before `start` (frames before `start` are decoded and
        dropped) and stops after `stop - 1`; the reader ends the file where the next keyframe's
        bytes begin, so the decoder flushes rather than read them. Memory stays at one window plus
        FFmpeg's frame threads.
        """
        stop = min(stop, self.info.num_frames)
        if start >= stop:
            return
        keyframes = np.asarray(self.info.keyframes)
        k = max(int(np.searchsorted(keyframes, start, side="right") - 1), 0)
        first = int(keyframes[k])
        self._reader.limit = _end_offset(self.info, stop, self._reader.size)
        wanted = start                       # the next frame to hand out
        batch: list[np.ndarray] = []
        stamps: list[float] = []
        while True:
            index = first
            decoder = self._decoder_from(first, k)
            try:
                for frame in decoder:
                    if index >= wanted:
                        batch.append(_bgr(frame, self.info.rotation, self._coded_size))
                        stamps.append(_frame_time(frame, self._stream.time_base))
                        wanted = index + 1
                        if len(batch) == window or index == stop - 1:
                            yield np.arange(index - len(batch) + 1, index + 1), batch, np.asarray(stamps, np.float64)
                            batch, stamps = [], []
                    index += 1
                    if index >= stop:
                        if stop == self.info.num_frames:
                            self._check_no_more(decoder)
                        return
            except VideoError:
                raise
            except ObjectReadError as exc:  # the store failed mid-shard: not the file's fault when transient
                raise _read_failure(self.uri, exc) from None
            except Exception as exc:
                reading = exc.__cause__ or exc.__context__
                if isinstance(reading, ObjectReadError):
                    raise _read_failure(self.uri, reading) from None
                raise VideoError(f"the video stream is corrupt at frame {index}: {_decode_detail(exc)}") from None
            if self._reader.limit is None:
                raise VideoError(f"the stream ended early: {index} frames decoded of the {self.info.num_frames} "
                                 "its container declares (truncated file?)")
            # Some frame before `stop` needs packets past the next keyframe (an open GOP's leading
            # frames): decode this stretch again with the whole file readable, from where we are.
            self._reader.limit = None

    def _rewind(self) -> None:
        """Open the container again at byte 0. Not a seek to timestamp 0: in a file whose timestamps
        restart (two MPEG-TS files joined), that timestamp is in the file twice."""
        limit, self._reader.limit = self._reader.limit, None   # the header may lie past the shard's end
        with contextlib.suppress(Exception):
            self._container.close()
        self._reader.seek(0)
        try:
            self._container, self._stream = _open_container(self.uri, self._reader)
        finally:
            self._reader.limit = limit
        if self.threads > 1:
            self._stream.thread_type = "FRAME"
            self._stream.thread_count = self.threads

    def _check_no_more(self, decoder: Iterator[Any]) -> None:
        """After the last counted frame: a frame more means the count was wrong (an index or a packet
        count that disagrees with the decoder). The video then fails, rather than be committed with
        frames missing. A damaged tail (an error while looking) is not more frames."""
        try:
            extra = next(decoder, None)
        except Exception:
            return
        if extra is not None:
            raise VideoError(
                f"decoding finds more frames than the {self.info.num_frames} its container declares (its index or "
                "timestamps are inconsistent), so some frames would be left out; re-encode it "
                "(ffmpeg -i IN -c:v libx264 OUT.mp4) and run that file")

    def _decoder_from(self, first: int, k: int) -> Iterator[Any]:
        """Frames in presentation order from keyframe `first` (the k-th keyframe) on.

        The seek aims just before the *next* keyframe's decode time: demuxers search by
        presentation time (MP4) or decode time (AVI), and a keyframe's presentation time lies
        between the two, so either search lands on this keyframe. The first packet read must be
        that keyframe (its decode time says so); frames the decoder shows before the keyframe (an
        open GOP's leading frames) belong to the shard before and are dropped. Packets that start
        at the reader's limit (the next shard's keyframe) are not decoded: the decoder is flushed.
        """
        container, stream = self._container, self._stream
        dts = self.info.keyframe_dts
        packets: Iterator[Any] | None = None
        skip, need_key = first, False
        if first > 0 and k < len(dts) and dts[k] >= 0:
            if k + 1 < len(dts) and dts[k + 1] > dts[k]:
                target = dts[k + 1] - 1
            else:  # the last keyframe: anywhere past it
                target = dts[k] + max(int(stream.duration or 0), 1 << 30)
            self._fresh = False
            try:
                container.seek(target, stream=stream, backward=True, any_frame=False)
                stream.codec_context.flush_buffers()  # no frame of an earlier window may come out now
            except Exception:  # FFmpeg cannot seek there (a timestamp wrap): count from the start
                pass
            else:
                demuxed = container.demux(stream)
                head = next((p for p in demuxed if p.size), None)
                if head is not None and head.dts == dts[k]:
                    packets, skip, need_key = itertools.chain((head,), demuxed), 0, True
                # else the seek landed elsewhere (an index that lies): count frames from the start instead.
        if packets is None:
            if not self._fresh:
                self._rewind()
                container, stream = self._container, self._stream
            self._fresh = False
            packets = container.demux(stream)
        limit = self._reader.limit
        for packet in packets:
            if limit is not None and packet.size and packet.pos is not None and packet.pos >= limit:
                decoded = stream.codec_context.decode(None)  # flush: the frames still held come out
            else:
                decoded = packet.decode()
            for frame in decoded:
                if need_key and not frame.key_frame:
                    continue
                need_key = False
                if skip:
                    skip -= 1
                    continue
                yield frame
            if limit is not None and packet.size and packet.pos is not None and packet.pos >= limit:
                return

    def close(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()

    def __enter__(self) -> "VideoStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def open_video(uri: str, *, info: VideoInfo | None = None, header: Mapping[int, bytes] | None = None,
               threads: int = DEFAULT_DECODE_THREADS) -> Iterator[VideoStream]:
    stream = VideoStream(uri, info=info, header=header, threads=threads)
    try:
        yield stream
    finally:
        stream.close()


__all__ = ["Probe", "VideoError", "VideoInfo", "VideoReadError", "VideoStream", "grid_timestamps", "open_video",
           "probe_video", "shard_bounds", "valid_timestamps"]
