"""What a job reports: its counts (`JobSummary`) and the exit codes the CLI returns."""
from __future__ import annotations

from dataclasses import dataclass, field

EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_WEIGHTS, EXIT_STORAGE, EXIT_RAY_DIED = 0, 2, 3, 4, 5, 6


@dataclass
class JobSummary:
    videos: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0
    rows: int = 0
    seconds: float = 0.0
    workers: int = 0
    finishers: int = 0
    random_weights: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped_inputs: list[tuple[str, str]] = field(default_factory=list)   # (name, why it is not a video job)
    bytes_read: int = 0    # bytes the shards read from the inputs (container headers: once per video, by the probe)
    decisions: list[tuple[str, str]] = field(default_factory=list)   # (video_id, why it was skipped or redone)
    device_windows: int = 0   # windows the device path ran (pipeline.perframe.ondevice)
    fallback_windows: dict[str, int] = field(default_factory=dict)   # of those, redone the reference way, by reason

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0
