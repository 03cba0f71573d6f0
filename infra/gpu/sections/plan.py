"""What one GPU run measures, and how big: the sizes for a GPU and for the CPU dry run, in one place.

`infra/gpu/measure.py` writes the chosen plan to a JSON file and hands its path to every section
(`--plan`); a section reads it with `load_plan`. The GPU sizes fit the run in 8 minutes on one
H100 with 16 vCPUs (README, "The prepared GPU run"); the dry-run sizes only prove the plumbing.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# Section name -> (script under infra/gpu/sections, seconds it may take on a GPU). They add up to
# 460 s; the run stops at TOTAL_SECONDS whatever is left (the device tool allows one 10-minute command).
SECTIONS: dict[str, tuple[str, float]] = {
    "0_env": ("s0_env.py", 20.0),
    "1_parity": ("s1_parity.py", 110.0),
    "2_floors": ("s2_floors.py", 50.0),
    "3_worker": ("s3_worker.py", 100.0),
    "4_decode": ("s4_decode.py", 30.0),
    "5_node": ("s5_node.py", 150.0),
}
TOTAL_SECONDS = 470.0


@dataclass(frozen=True)
class Plan:
    dry_run: bool = False
    device: str = "cuda"
    # The job's models (pipeline.options.DEFAULT_MODELS), random weights: speed only.
    detector: str = "yolox_s"
    pose: str = "hrnet_w32_coco_256x192"
    mesh: str = "hmr_spin_resnet50"
    max_persons: int = 3
    flip_test: bool = True
    # Section 2: each network alone, its input already on the device.
    floor_networks: tuple[str, ...] = ("yolox_s", "hrnet_w32_coco_256x192", "rtmpose_m_coco_256x192", "hmr_spin_resnet50")
    floor_frames: tuple[int, ...] = (8, 32)        # detector batches (frames)
    floor_crops: tuple[int, ...] = (64, 256)       # 2D and HMR batches (crops; the flip test doubles 2D's)
    floor_repeats: int = 20
    # Section 3: one worker. The 720p clip is encoded on the machine from the street clip's frames.
    clip_size: tuple[int, int] = (1280, 720)
    clip_frames: int = 384
    street_frames: int = 384
    windows: tuple[int, ...] = (8, 32)             # --frames-per-batch
    shard_frames: int = 384
    profile_frames: int = 64                       # frames of the counted (profiled) pass
    # Section 4: decoding alone.
    decode_threads: tuple[int, ...] = (1, 4, 8)
    decode_frames: int = 384
    # Section 5: a node, through the runner (Ray), or worker processes where Ray cannot run.
    node_workers: tuple[int, ...] = (2, 3, 4)
    node_window: int = 8                           # the job's default --frames-per-batch
    node_shard_frames: int = 128
    node_seconds: float = 12.0                     # of steady work per worker count, at section 3's rate
    node_min_frames: int = 1024
    node_max_frames: int = 6144
    timeouts: dict[str, float] = field(default_factory=lambda: {k: v for k, (_, v) in SECTIONS.items()})
    total_seconds: float = TOTAL_SECONDS

    @property
    def half(self) -> bool:
        """fp16 autocast on CUDA, as a job runs; fp32 on a CPU (the job's default there)."""
        return self.device.startswith("cuda")

    def models(self) -> dict[str, str]:
        from posepipe.pipeline.options import DEFAULT_MODELS

        return {**DEFAULT_MODELS, "detector": self.detector, "pose": self.pose, "mesh": self.mesh}


# The CPU dry run: the same script end to end, every section, sizes that take seconds on two cores.
DRY_RUN = Plan(
    dry_run=True, device="cpu", max_persons=1, flip_test=False,
    floor_frames=(1, 2), floor_crops=(1, 2), floor_repeats=2,
    clip_size=(320, 180), clip_frames=4, street_frames=4, windows=(2, 4), shard_frames=4, profile_frames=4,
    decode_threads=(1, 2), decode_frames=4,
    node_workers=(2, 3, 4), node_window=2, node_shard_frames=2, node_seconds=1.0, node_min_frames=4, node_max_frames=8,
    timeouts={"0_env": 60.0, "1_parity": 180.0, "2_floors": 180.0, "3_worker": 300.0, "4_decode": 60.0, "5_node": 420.0},
    total_seconds=1200.0,
)


def with_settings(plan: Plan, settings: list[str]) -> Plan:
    """`plan` with KEY=VALUE changes (measure.py --set): VALUE as JSON where it parses (numbers,
    lists, true), else the plain string; lists become tuples like the fields they replace."""
    known = {f.name for f in fields(Plan)}
    changes: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--set {item!r}: write KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        elif isinstance(getattr(plan, key), tuple) and not isinstance(value, tuple):
            value = (value,)
        changes[key] = value
    return replace(plan, **changes)


def save_plan(plan: Plan, path: Path) -> None:
    path.write_text(json.dumps(asdict(plan), indent=1))


def load_plan(path: str | Path) -> Plan:
    data = json.loads(Path(path).read_text())
    return Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
