"""What a published weight set is: one small frozen record per checkpoint.

The pipeline reads preprocessing (input size, mean/std) and geometry from here, so nothing
hard-codes normalisation twice. Each model file owns the records for its family in a
``WEIGHTS`` dict; ``models/__init__.py`` joins them into one explicit catalogue.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Weights:
    name: str                      # catalogue name, e.g. "hrnet_w32_coco_256x192"
    family: str                    # the model file that builds it: "yolox", "hrnet", "rtmpose", "videopose3d", ...
    url: str                       # official download URL (the authors' or mmpose's)
    filename: str                  # file name in the cache directory
    source_format: str             # container layout of the official file, e.g. "yolox", "hrnet", "mmpose"
    stage: str = ""                # the job stage it serves: "detector" | "pose" | "lifter" | "mesh"
    arch: Mapping[str, Any] = field(default_factory=dict)   # builder keyword arguments
    sha256: str | None = None      # full hash when one is published or known
    hash_prefix: str | None = None  # sha256 prefix embedded in the file name (mmpose / torchvision style)
    input_size: tuple[int, int] | None = None  # (height, width) of the network input
    mean: tuple[float, ...] | None = None      # per channel, in the network's channel order and value range
    std: tuple[float, ...] | None = None
    color: str = "RGB"             # channel order the network expects
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    license: str = ""
    paper: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    # Cost of one network input (a crop; for a lifter, one output frame; for a detector, one
    # letterboxed image), in multiply-accumulates, counted by torch's FlopCounterMode (tests check it).
    gmacs: float | None = None
    notes: str = ""

    @property
    def integrity(self) -> str:
        """How the official file is checked, in words (`posepipe weights list` / `verify`)."""
        if self.sha256:
            return f"sha256 pinned ({self.sha256[:16]}...): any other file is refused"
        if self.hash_prefix:
            return (f"file-name hash prefix {self.hash_prefix}: checked, a mismatch only warns (not established "
                    f"as a sha256 prefix for this file)")
        return "no published hash"

    @property
    def plain_http(self) -> bool:
        """The official URL is http://, without TLS: nothing authenticates the server or the bytes."""
        return self.url.lower().startswith("http://")

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (used by `posepipe weights list` and Parquet provenance)."""
        return {
            "name": self.name, "family": self.family, "stage": self.stage, "url": self.url, "plain_http": self.plain_http,
            "sha256": self.sha256, "hash_prefix": self.hash_prefix, "integrity": self.integrity,
            "source_format": self.source_format, "input_size": self.input_size, "license": self.license,
            "paper": self.paper, "metrics": dict(self.metrics), "gmacs": self.gmacs,
        }
