"""Job options: one flat, typed dataclass, validated at the edge with messages naming the fix.

The contract every stage reads (perframe, temporal, run, downstream), so it sits at the top of
pipeline/, below nothing: no stage imports upward to reach it."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

STAGE_MODELS = ("detector", "pose", "lifter", "mesh")
DEFAULT_MODELS = {
    "detector": "yolox_s",
    "pose": "hrnet_w32_coco_256x192",
    "lifter": "videopose3d_243_coco",
    "mesh": "hmr_spin_resnet50",
}
# Which catalogue entries a stage takes is each weights record's `stage` (every 2D family for
# "pose", both lifters for "lifter", ...); the option that chooses it, for messages:
STAGE_OPTIONS = {"detector": "--detector", "pose": "--pose-model", "lifter": "--lifter", "mesh": "--mesh"}
# Pose models that find the people themselves (bottom-up, one-stage): with one, a job runs no
# detector. The catalogue's own list is posepipe.models.DETECTOR_FREE (by family); it is named here
# too so that options stay light (no torch import), and a test keeps the two equal.
DETECTOR_FREE_POSE_MODELS = frozenset({"ae_hrnet_w32_coco_512x512", "rtmo_s_coco_640x640", "dekr_hrnet_w32_coco_512x512"})
# Ceilings past which an option makes a job useless rather than bigger (README, Options): more
# people per frame than any crowd scene gives the detector, batches that no GPU holds, shards
# longer than a day of 30 fps video.
MAX_PERSONS = 100
MAX_FRAMES_PER_BATCH = 512
MAX_SHARD_FRAMES = 3_000_000
MAX_WORKERS = 10_000
MAX_DECODE_THREADS = 64
# --refine METHODS: what may refine HMR's SMPL after it (models/smplify.py). The SMPL model and the GMM
# prior are licensed and the user's: named by path (--smpl-model, --smpl-prior, or their environment
# variables), never stored beyond their sha256.
REFINE_METHODS = ("smplify",)
SMPL_MODEL_ENV, SMPL_PRIOR_ENV = "POSEPIPE_SMPL_MODEL", "POSEPIPE_SMPL_PRIOR"
# --densepose: DensePose R-CNN's chart for every row (pipeline.perframe.densepose), from the official
# detectron2 file named by --densepose-weights or this variable (not fetched: it is 250 MB, and a job
# that was asked for charts must never run without them).
DENSEPOSE_WEIGHTS_ENV = "POSEPIPE_DENSEPOSE_WEIGHTS"
DENSEPOSE_MODEL = "densepose_rcnn_R_50_FPN_s1x"
DENSEPOSE_URL = "https://dl.fbaipublicfiles.com/densepose/densepose_rcnn_R_50_FPN_s1x/165712039/model_final_162be9.pkl"


class OptionError(ValueError):
    """A job option is wrong; `option` names it as the user typed it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass(frozen=True)
class JobOptions:
    input: str
    output: str
    address: str | None = None          # None: a local Ray started on demand
    num_workers: int | None = None      # None: what the cluster's GPUs (or CPUs) allow
    shard_frames: int = 256
    device: str = "auto"                # auto | cpu | cuda
    half: bool | None = None            # None: fp16 autocast on CUDA, fp32 on CPU
    device_path: bool | None = None     # per-frame work on the device (pipeline.perframe.ondevice); None: on a GPU
    max_persons: int = 10
    det_conf: float = 0.3               # unclaimed boxes below it are not rows (pipeline.temporal.association)
    det_nms: float = 0.7                # ByteTrack's NMS: boxes of people partly hidden by others survive it
    flip_test: bool = True
    flip_augment_3d: bool = True
    frames_per_batch: int = 8
    decode_threads: int | None = None   # FFmpeg threads per worker's open video; None: the worker's CPUs
    models: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    weights: Mapping[str, str] = field(default_factory=dict)   # catalogue name -> URI
    random_weights: bool = False
    cpus_per_worker: float | None = None
    track_high: float = 0.5             # ByteTrack first-stage score
    track_low: float = 0.1              # the floor: boxes down to this score reach the tracker (ByteTrack's 0.1)
    track_new: float = 0.6              # score needed to start a track
    retries: int = 2                    # extra attempts of a shard whose worker died
    force: bool = False                 # reprocess videos even if complete
    refine: str | None = None           # None | "smplify": fit SMPL to the 2D keypoints from HMR's start
    smpl_model: str | None = None       # SMPL's model file (.pkl), the user's; only with refine
    smpl_prior: str | None = None       # SMPLify's GMM pose prior (gmm_08.pkl), the user's; only with refine
    smplify: Mapping[str, float] = field(default_factory=dict)  # SMPLifyOptions overrides (SPIN's defaults)
    densepose: bool = False             # DensePose charts of every row into densepose/
    densepose_weights: str | None = None  # detectron2's model_final_162be9.pkl (or a file of its layout)

    def __post_init__(self) -> None:
        if not self.densepose and self.densepose_weights:  # the file (often set in the environment) is unused
            object.__setattr__(self, "densepose_weights", None)
        if not self.refine:  # the files (often set once in the environment) matter only to a refining job
            for name, empty in (("smpl_model", None), ("smpl_prior", None), ("smplify", {})):
                if getattr(self, name):
                    object.__setattr__(self, name, empty)
        # A detector-free --pose-model makes --detector irrelevant: the job has no detector stage, so
        # nothing loads or downloads one, --weights cannot name one, and provenance and the fingerprint
        # (its `models`) record a job without a detector.
        if self.detector_free and "detector" in self.models:
            object.__setattr__(self, "models", {k: v for k, v in self.models.items() if k != "detector"})

    @property
    def detector_free(self) -> bool:
        """Whether the pose model finds the people itself (then no detector runs: pipeline.perframe.worker)."""
        return self.models.get("pose") in DETECTOR_FREE_POSE_MODELS

    def validate(self, catalogue: Mapping[str, Any]) -> None:
        if not self.input:
            raise OptionError("INPUT", "give a folder, a video file or a URI prefix")
        if not self.output:
            raise OptionError("--output", "give a folder or an s3:// prefix for the Parquet tables")
        _check_uri("INPUT", self.input)
        _check_uri("--output", self.output)
        _in_range("--shard-frames", self.shard_frames, 1, MAX_SHARD_FRAMES)
        if self.num_workers is not None:
            _in_range("--num-workers", self.num_workers, 1, MAX_WORKERS)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise OptionError("--device", f"must be auto, cpu or cuda (got {self.device!r})")
        _in_range("--max-persons", self.max_persons, 1, MAX_PERSONS)
        if not 0.0 < self.det_conf <= 1.0:
            raise OptionError("--det-conf", f"must be in (0, 1] (got {self.det_conf})")
        if not 0.0 < self.det_nms <= 1.0:
            raise OptionError("--det-nms", f"must be in (0, 1] (got {self.det_nms})")
        if not 0.0 < self.track_low < self.track_high:
            raise OptionError("track_low", f"must lie in (0, track_high={self.track_high}) (got {self.track_low})")
        _in_range("--frames-per-batch", self.frames_per_batch, 1, MAX_FRAMES_PER_BATCH)
        if self.decode_threads is not None:
            _in_range("--decode-threads", self.decode_threads, 1, MAX_DECODE_THREADS)
        for stage, name in self.models.items():
            if stage not in STAGE_MODELS:
                raise OptionError("--model", f"unknown stage {stage!r}; stages: {', '.join(STAGE_MODELS)}")
            spec = catalogue.get(name)
            if spec is None or getattr(spec, "stage", None) != stage:
                choices = sorted(n for n, s in catalogue.items() if getattr(s, "stage", None) == stage)
                what = "unknown" if spec is None else f"a {spec.stage} model"
                raise OptionError(STAGE_OPTIONS[stage], f"{name!r} is {what}, not a {stage} model; choose one of {', '.join(choices)}")
        # The job's tables hold COCO-17 keypoints (the default 2D model's joints, pipeline.io.schema): a model of
        # another skeleton (whole-body, AP-10K animals) would have its joints written under COCO's names, or fail
        # in every shard. Until outputs record their skeleton, such models are for Python only.
        coco17 = tuple(getattr(catalogue.get(DEFAULT_MODELS["pose"]), "keypoint_names", ()))
        pose = catalogue.get(self.models.get("pose", ""))
        names = tuple(getattr(pose, "keypoint_names", ()) or ())
        if coco17 and names and names != coco17:
            raise OptionError("--pose-model", f"{self.models['pose']!r} gives {len(names)} keypoints of another skeleton "
                              f"than COCO-17 ({', '.join(names[:3])}, ...), and a posepipe job writes COCO-17 only for "
                              "now; use it from Python (posepipe.models.load_model(NAME).predict(image, boxes)) or "
                              "choose a COCO model: posepipe weights list")
        for name in self.weights:
            if name not in self.models.values():
                raise OptionError(
                    "--weights", f"{name!r} is not a model this job uses ({', '.join(self.models.values())}); write NAME=URI with one of those names"
                )
        if self.random_weights and self.weights:
            raise OptionError("--random-weights", "cannot be combined with --weights; drop one of them")
        if self.refine is not None:
            self.check_refine()
        if self.densepose:
            self.check_densepose()

    def check_densepose(self) -> None:
        """--densepose: the weights file is read and recognised here, before any work (exit 2 when it is
        missing or not DensePose R-CNN's); a plumbing run (--random-weights) builds generated weights."""
        if self.random_weights:
            return
        if not self.densepose_weights:
            raise OptionError("--densepose-weights", f"--densepose needs DensePose R-CNN's weights file "
                              f"({DENSEPOSE_MODEL}, 256 MB): download {DENSEPOSE_URL} and pass --densepose-weights "
                              f"PATH or set ${DENSEPOSE_WEIGHTS_ENV} (or add --random-weights for a plumbing run)")
        # imported here, as check_refine's: options stay light (no torch) for jobs that do not ask for it
        from posepipe.models.checkpoint import CheckpointError
        from posepipe.models.densepose import checkpoint_format, read_densepose_checkpoint

        key = _file_key(self.densepose_weights)
        if key not in _CHECKED_DENSEPOSE:
            try:
                found = checkpoint_format(read_densepose_checkpoint(self.densepose_weights))
            except CheckpointError as exc:
                raise OptionError("--densepose-weights", str(exc)) from None
            if found is None:
                raise OptionError("--densepose-weights", f"{self.densepose_weights} is not a DensePose R-CNN checkpoint "
                                  f"(no roi_heads.densepose_predictor.* under 'model'); download {DENSEPOSE_URL}")
            _CHECKED_DENSEPOSE.add(key)

    def densepose_files(self) -> dict[str, str]:
        """What provenance and the fingerprint keep of the DensePose weights: their sha256 (or 'random')."""
        if not self.densepose:
            return {}
        return {"densepose_weights_sha256": "random" if self.random_weights else file_sha256(self.densepose_weights)}

    def check_refine(self) -> None:
        """--refine smplify: the method, its options, and the user's two files, read and checked here, before
        any work (a missing or wrong file is exit 2, never a job that silently skips the refinement)."""
        if self.refine not in REFINE_METHODS:
            raise OptionError("--refine", f"{self.refine!r} is not a refinement; choose {', '.join(REFINE_METHODS)}")
        from posepipe.models.smpl import SMPLModelError, read_smpl_model
        from posepipe.models.smplify import SMPLifyOptions, read_gmm_prior

        try:
            SMPLifyOptions(**dict(self.smplify))
        except TypeError:
            known = ", ".join(f.name for f in fields(SMPLifyOptions))
            raise OptionError("--smplify-option", f"unknown name in {dict(self.smplify)}; names: {known}") from None
        except ValueError as exc:
            raise OptionError("--smplify-option", str(exc)) from None
        where = "SMPL's site (smpl.is.tue.mpg.de or smplify.is.tue.mpg.de), after accepting its licence"
        for option, env, path, what, read in (
                ("--smpl-model", SMPL_MODEL_ENV, self.smpl_model, "SMPL's neutral model file (SMPL_NEUTRAL.pkl or "
                 "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl)", read_smpl_model),
                ("--smpl-prior", SMPL_PRIOR_ENV, self.smpl_prior, "SMPLify's GMM pose prior (gmm_08.pkl)", read_gmm_prior)):
            if not path:
                raise OptionError(option, f"--refine smplify needs {what}, which is licensed and not shipped: download it "
                                          f"from {where} and pass {option} PATH or set ${env}")
            try:
                read(path)
            except SMPLModelError as exc:
                raise OptionError(option, str(exc)) from None

    def smplify_options(self):  # noqa: ANN201 - SMPLifyOptions, imported lazily (torch)
        from posepipe.models.smplify import SMPLifyOptions

        return SMPLifyOptions(**dict(self.smplify))

    def refine_files(self) -> dict[str, str]:
        """The sha256 of the SMPL model and the GMM prior a refining job uses (all that provenance keeps of them)."""
        if not self.refine:
            return {}
        return {"smpl_model_sha256": file_sha256(self.smpl_model), "smpl_prior_sha256": file_sha256(self.smpl_prior)}

    def tracker_config(self):  # noqa: ANN201 - TrackerConfig, imported lazily
        """ByteTrack thresholds. Random weights score every box near 0.36, so a plumbing run lowers
        the thresholds to the detector's, or tracking and lifting would never run."""
        from posepipe.pipeline.temporal.tracking import TrackerConfig

        high, new = self.track_high, self.track_new
        if self.random_weights:
            high, new = min(high, self.det_conf), min(new, self.det_conf)
        return TrackerConfig(high_threshold=high, new_track_threshold=new, low_threshold=min(self.track_low, high / 2))

    def precision(self, gpu: bool) -> str:
        """The arithmetic the models run in (fp16 autocast by default on a GPU, fp32 elsewhere; --half
        on a CPU is bf16), and where per-frame pre/post-processing runs (the device path by default
        on a GPU): both can move a keypoint by a fraction of a pixel, so both are in the fingerprint."""
        on_gpu = self.device.startswith("cuda") or (self.device == "auto" and gpu)
        half = on_gpu if self.half is None else bool(self.half)
        arithmetic = "fp32" if not half else "fp16" if on_gpu else "bf16"
        on_device = on_gpu if self.device_path is None else bool(self.device_path)
        return f"{arithmetic}+device-path" if on_device else arithmetic

    def fingerprint(self, weight_hashes: Mapping[str, str | None], *, precision: str = "fp32",
                    code: str | None = None) -> str:
        """Hash of everything that changes the rows: the options, the weights' hashes, the precision
        the models run in and the code version. A rerun with the same one skips complete videos
        (whose input is unchanged)."""
        relevant = {
            "models": dict(self.models), "weights": dict(weight_hashes), "random": self.random_weights,
            "max_persons": self.max_persons, "det_conf": self.det_conf, "det_nms": self.det_nms,
            "flip_test": self.flip_test, "flip_augment_3d": self.flip_augment_3d,
            "track": [self.track_high, self.track_new], "track_low": self.track_low,
            "rows": 2,  # rows chosen after association, person_index (pipeline.temporal.association)
            "precision": precision, "code": code or code_version(),
        }
        if self.refine:  # absent otherwise: a job without refinement keeps the fingerprint it had
            relevant["refine"] = {"method": self.refine, **self.refine_files(),
                                  "options": {k: float(v) for k, v in sorted(dict(self.smplify).items())}}
        if self.densepose:  # absent otherwise, as refine
            relevant["densepose"] = {"model": DENSEPOSE_MODEL, **self.densepose_files()}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def with_absolute_paths(self) -> "JobOptions":
        """Local INPUT and OUTPUT made absolute, once, at the edge. Ray's workers run in other working
        directories: a relative OUTPUT sent their rows to another folder while the driver wrote its
        index here (and the job said 0), and a stored relative INPUT could not be found by `render`
        from anywhere else. Links in the folders above are resolved, the last name kept."""
        from posepipe.pipeline.io.sources import absolute_path, scheme_of

        changes = {name: str(absolute_path(getattr(self, name))) for name in ("input", "output")
                   if getattr(self, name) and scheme_of(getattr(self, name)) == ""}
        # the SMPL files too: the model workers read them from their own working directories
        changes.update({name: os.path.abspath(getattr(self, name)) for name in ("smpl_model", "smpl_prior",
                                                                                "densepose_weights")
                        if getattr(self, name)})
        return replace(self, **changes) if changes else self

    def public(self) -> dict[str, Any]:
        """Options as stored in provenance: URIs redacted, nothing secret."""
        from posepipe.pipeline.io.sources import redact

        data = asdict(self)
        data["input"] = redact(self.input)
        data["output"] = redact(self.output)
        data["weights"] = {k: redact(v) for k, v in self.weights.items()}
        data["models"] = dict(self.models)
        data.pop("address", None)
        # the licensed files: their hashes only, never where they live
        data.pop("smpl_model", None)
        data.pop("smpl_prior", None)
        data.update(self.refine_files())
        data["smplify"] = dict(self.smplify)
        data.pop("densepose_weights", None)  # a local path: its hash only
        data.update(self.densepose_files())
        return data


def _in_range(option: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise OptionError(option, f"must be between {low} and {high} (got {value})")


def _check_uri(option: str, uri: str) -> None:
    """Object-store URIs name a bucket and a prefix, nothing else: credentials in them would be
    printed and stored, and a query string would become part of every object key."""
    from posepipe.pipeline.io.redaction import has_secrets, redact
    from posepipe.pipeline.io.sources import scheme_of

    if scheme_of(uri) in ("s3", "gs", "az", "file") and has_secrets(uri):
        raise OptionError(option, (
            f"{redact(uri)} was given with credentials or a query string, which posepipe will not put in "
            "logs, tables or object keys; write it as scheme://BUCKET/PREFIX and give credentials through "
            "the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role)"))


_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_CHECKED_DENSEPOSE: set[tuple[str, int, int]] = set()   # files check_densepose read and recognised


def _file_key(path: str) -> tuple[str, int, int]:
    """(absolute path, size, mtime): a file read once per process while it is unchanged. A missing one
    is an OptionError naming it."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise OptionError("--densepose-weights", f"cannot read {path} ({exc.strerror}); download {DENSEPOSE_URL} "
                          f"and pass its path") from None
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


def file_sha256(path: str | None) -> str:
    """sha256 of a local file, read once per (path, size, mtime)."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


_CODE_VERSION: str | None = None


def code_version() -> str:
    """posepipe's version plus a digest of the code that computes results (models/, pipeline/), so
    a changed implementation is a changed fingerprint even where the version string is not bumped."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        from importlib.metadata import PackageNotFoundError, version
        from pathlib import Path

        try:
            release = version("posepipe")
        except PackageNotFoundError:
            release = "unknown"
        digest = hashlib.sha256()
        root = Path(__file__).resolve().parents[2]  # the folder holding models/ and pipeline/
        for package in ("models", "pipeline"):
            for path in sorted((root / package).rglob("*.py")):
                digest.update(path.relative_to(root).as_posix().encode())
                digest.update(path.read_bytes())
        _CODE_VERSION = f"{release}+{digest.hexdigest()[:12]}"
    return _CODE_VERSION
