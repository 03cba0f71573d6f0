"""VideoPose3D: 2D keypoint sequences to 3D poses with dilated temporal convolutions.

Pavllo, Feichtenhofer, Grangier and Auli, "3D human pose estimation in video with temporal
convolutions and semi-supervised training", CVPR 2019. A faithful re-implementation of
facebookresearch/VideoPose3D (``common/model.py``, ``common/generators.py``, ``common/camera.py``
and ``run.py``'s evaluation), loadable from the official checkpoints with ``strict=True``.

Order of this file: building blocks, the models, the weights table, the public builders and the
predictor (:class:`VideoPose3DLifter`).

Conventions (all as the official code; see shared/golden/videopose3d_243_coco/README.md):

- pixel coordinates are normalised by :func:`normalize_screen_coordinates`, which divides x
  **and y** by the image width;
- sequences are edge-padded by ``pad = (receptive_field - 1) // 2`` frames per side, so T frames
  in give T frames out;
- test-time augmentation negates x, swaps the COCO left/right joints on the input, runs the
  original and the mirrored sequence as one batch, un-mirrors with the H36M left/right lists and
  averages;
- the root joint is not zeroed; outputs are camera-space, root-relative by training only.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from posepipe.models.checkpoint import CheckpointError, load_strict, strip_prefix, tensors_only
from posepipe.models.precision import forward_half_guarded
from posepipe.models.skeletons import (
    COCO17_LEFT,
    COCO17_RIGHT,
    H36M17_LEFT,
    H36M17_NAMES,
    H36M17_RIGHT,
    H36M17_SKELETON,
)
from posepipe.models.weights import Weights

# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def normalize_screen_coordinates(X: np.ndarray, w: float, h: float) -> np.ndarray:
    """Pixels to the official normalised frame: ``x/w*2 - 1`` and ``y/w*2 - h/w``.

    Both coordinates are divided by the **width** (the aspect ratio is kept), so x spans
    [-1, 1] and y spans [-h/w, h/w], centred on the image centre. The arithmetic mirrors
    ``run.py`` bit for bit: ``X / w * 2`` in float32, minus the float64 pair ``[1, h/w]``,
    stored back as float32.
    """
    X = np.asarray(X)
    if X.shape[-1] != 2:
        raise ValueError(f"normalize_screen_coordinates expects (..., 2) pixel coordinates, got shape {X.shape}")
    w, h = float(w), float(h)
    if not (w > 0 and h > 0):
        raise ValueError(f"image size must be positive, got width={w}, height={h}")
    # Python floats are "weak" scalars: float32 input stays float32 here, as in the official code.
    scaled = X.astype(np.float32, copy=False) / w * 2
    return (scaled - np.array([1.0, h / w])).astype(np.float32)


class TemporalModelBase(nn.Module):
    """What both VideoPose3D variants share: input/output reshaping and the geometry.

    ``expand_bn`` and ``shrink`` are created here, before the subclass creates its convolutions,
    exactly as upstream: that fixes the official ``state_dict()`` order.
    """

    def __init__(
        self,
        num_joints_in: int,
        in_features: int,
        num_joints_out: int,
        filter_widths: Sequence[int],
        causal: bool,
        dropout: float,
        channels: int,
    ) -> None:
        super().__init__()
        filter_widths = [int(fw) for fw in filter_widths]
        if not filter_widths:
            raise ValueError("filter_widths must name at least one convolution width")
        for fw in filter_widths:
            if fw < 1 or fw % 2 == 0:
                raise ValueError(f"only odd filter widths are supported, got {filter_widths}")
        self.num_joints_in = int(num_joints_in)
        self.in_features = int(in_features)
        self.num_joints_out = int(num_joints_out)
        self.filter_widths = filter_widths
        self.causal = bool(causal)

        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU(inplace=True)
        # Per level: frames consumed on each side (level 0 is expand_conv).
        self.pad = [filter_widths[0] // 2]
        self.causal_shift = [filter_widths[0] // 2 if causal else 0]
        self.expand_bn = nn.BatchNorm1d(channels, momentum=0.1)
        self.shrink = nn.Conv1d(channels, num_joints_out * 3, 1)

    def receptive_field(self) -> int:
        """Input frames that one output frame sees (243 for filter widths 3,3,3,3,3)."""
        return 1 + 2 * self.total_pad()

    def total_pad(self) -> int:
        """Frames consumed on each side: ``(receptive_field - 1) // 2`` (121 for 243)."""
        return sum(self.pad)

    def total_causal_shift(self) -> int:
        """Asymmetric padding offset: 0 for symmetric models, ``total_pad()`` for causal ones.

        A causal model's output frame t sees input frames t - 2 * pad .. t of the padded input,
        so sequences are padded by ``pad + shift`` before and ``pad - shift`` after. (Upstream's
        ``total_causal_shift()`` multiplies the dilated model's shifts by the dilation twice;
        its ``run.py`` does not call it and uses ``pad``, as here.)
        """
        return self.total_pad() if self.causal else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, J_in, F) -> (B, T - receptive_field + 1, J_out, 3)."""
        if x.ndim != 4 or x.shape[-2] != self.num_joints_in or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects (batch, frames, {self.num_joints_in}, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        if x.shape[1] < self.receptive_field():
            raise ValueError(
                f"{type(self).__name__} needs at least {self.receptive_field()} input frames "
                f"(its receptive field), got {x.shape[1]}; pad the sequence first"
            )
        batch, frames = x.shape[:2]
        # Channel 2*j + c is coordinate c of joint j.
        x = x.reshape(batch, frames, -1).permute(0, 2, 1)
        x = self._forward_blocks(x)
        # Channel 3*j + k of `shrink` is coordinate k of joint j.
        return x.permute(0, 2, 1).reshape(batch, -1, self.num_joints_out, 3)

    def _forward_blocks(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------------------------


class TemporalModel(TemporalModelBase):
    """The reference model: dilated 1-D convolutions over a whole sequence ("valid", no padding).

    ``expand_conv`` (width fw0) -> BN -> ReLU -> dropout, then one residual block per further
    filter width: conv(fw_i, dilation d) -> BN -> ReLU -> dropout -> conv(1) -> BN -> ReLU ->
    dropout, plus the block input cropped by its padding; ``shrink`` is a 1x1 conv with bias.
    """

    def __init__(
        self,
        num_joints_in: int,
        in_features: int,
        num_joints_out: int,
        filter_widths: Sequence[int],
        causal: bool = False,
        dropout: float = 0.25,
        channels: int = 1024,
    ) -> None:
        super().__init__(num_joints_in, in_features, num_joints_out, filter_widths, causal, dropout, channels)
        fws = self.filter_widths
        self.expand_conv = nn.Conv1d(num_joints_in * in_features, channels, fws[0], bias=False)
        layers_conv: list[nn.Module] = []
        layers_bn: list[nn.Module] = []
        dilation = fws[0]
        for fw in fws[1:]:
            self.pad.append((fw - 1) * dilation // 2)
            self.causal_shift.append(fw // 2 * dilation if causal else 0)
            layers_conv.append(nn.Conv1d(channels, channels, fw, dilation=dilation, bias=False))
            layers_bn.append(nn.BatchNorm1d(channels, momentum=0.1))
            layers_conv.append(nn.Conv1d(channels, channels, 1, bias=False))
            layers_bn.append(nn.BatchNorm1d(channels, momentum=0.1))
            dilation *= fw
        self.layers_conv = nn.ModuleList(layers_conv)
        self.layers_bn = nn.ModuleList(layers_bn)

    def _forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.relu(self.expand_bn(self.expand_conv(x))))
        for i in range(len(self.pad) - 1):
            pad, shift = self.pad[i + 1], self.causal_shift[i + 1]
            res = x[:, :, pad + shift: x.shape[2] - pad + shift]
            x = self.drop(self.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x))))
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x))))
        return self.shrink(x)


class TemporalModelOptimized1f(TemporalModelBase):
    """Single-output-frame variant: strided instead of dilated convolutions.

    Takes exactly ``receptive_field()`` frames per item and returns one frame; skips every
    intermediate result the dilated model would throw away. Same state_dict names and shapes as
    :class:`TemporalModel` (the weights are interchangeable).
    """

    def __init__(
        self,
        num_joints_in: int,
        in_features: int,
        num_joints_out: int,
        filter_widths: Sequence[int],
        causal: bool = False,
        dropout: float = 0.25,
        channels: int = 1024,
    ) -> None:
        super().__init__(num_joints_in, in_features, num_joints_out, filter_widths, causal, dropout, channels)
        fws = self.filter_widths
        self.expand_conv = nn.Conv1d(num_joints_in * in_features, channels, fws[0], stride=fws[0], bias=False)
        layers_conv: list[nn.Module] = []
        layers_bn: list[nn.Module] = []
        dilation = fws[0]
        for fw in fws[1:]:
            self.pad.append((fw - 1) * dilation // 2)
            # Per level, in units of that level's strided grid; total_causal_shift() scales it.
            self.causal_shift.append(fw // 2 if causal else 0)
            layers_conv.append(nn.Conv1d(channels, channels, fw, stride=fw, bias=False))
            layers_bn.append(nn.BatchNorm1d(channels, momentum=0.1))
            layers_conv.append(nn.Conv1d(channels, channels, 1, bias=False))
            layers_bn.append(nn.BatchNorm1d(channels, momentum=0.1))
            dilation *= fw
        self.layers_conv = nn.ModuleList(layers_conv)
        self.layers_bn = nn.ModuleList(layers_bn)

    def _forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.relu(self.expand_bn(self.expand_conv(x))))
        for i in range(len(self.pad) - 1):
            fw = self.filter_widths[i + 1]
            res = x[:, :, self.causal_shift[i + 1] + fw // 2:: fw]
            x = self.drop(self.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x))))
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x))))
        return self.shrink(x)


# --------------------------------------------------------------------------------------------
# Weights table
# --------------------------------------------------------------------------------------------

_PAPER = (
    "3D human pose estimation in video with temporal convolutions and semi-supervised training "
    "(Pavllo et al., CVPR 2019)"
)

WEIGHTS: dict[str, Weights] = {
    "videopose3d_243_coco": Weights(
        name="videopose3d_243_coco",
        family="videopose3d",
        stage="lifter",
        gmacs=0.0195,  # per output frame of a long track, torch's FlopCounterMode
        url="https://dl.fbaipublicfiles.com/video-pose-3d/pretrained_h36m_detectron_coco.bin",
        filename="pretrained_h36m_detectron_coco.bin",
        source_format="videopose3d",
        arch={
            "num_joints_in": 17,
            "in_features": 2,
            "num_joints_out": 17,
            "filter_widths": (3, 3, 3, 3, 3),
            "causal": False,
            "dropout": 0.25,
            "channels": 1024,
        },
        keypoint_names=H36M17_NAMES,
        skeleton=H36M17_SKELETON,
        license="CC BY-NC 4.0",
        paper=_PAPER,
        metrics={},
        notes=(
            "Input: COCO-17 (x, y) in pixels from Detectron (pretrained on COCO, not fine-tuned), "
            "no keypoint scores; output: H36M-17 camera-space 3D joints. Receptive field 243 "
            "frames. Trained on Human3.6M (50 fps) with "
            "`run.py -e 80 -k detectron_pt_coco -arc 3,3,3,3,3` and the score channel dropped "
            "(maintainer, VideoPose3D issue #64). The authors publish no H36M MPJPE for this "
            "exact checkpoint; the paper's closest row, 'Ours (D PT)' = 54.8 mm (Protocol 1, "
            "Table 3), is the sibling d-pt-243.bin, which also takes the keypoint score."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Public builders and the predictor
# --------------------------------------------------------------------------------------------

_SUPPORTED_LAYOUT = (
    "the run.py container {'model_pos': state_dict, 'epoch', 'lr', 'optimizer', 'random_state'"
    "[, 'model_traj']} or a bare TemporalModel state_dict (keys such as 'expand_conv.weight', "
    "optionally prefixed with 'module.')"
)


def checkpoint_format(obj: Any) -> str | None:
    """The supported layout of an unpickled checkpoint, by its keys; None if none."""
    if not isinstance(obj, Mapping):
        return None
    state = obj.get("model_pos", obj)
    if not isinstance(state, Mapping) or "expand_conv.weight" not in strip_prefix(tensors_only(state), "module."):
        return None
    return "VideoPose3D run.py {'model_pos': state_dict, ...}" if "model_pos" in obj else "bare TemporalModel state_dict"


def convert_checkpoint(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """Any supported VideoPose3D checkpoint container -> the official TemporalModel state dict.

    Recognised by key: ``'model_pos'`` (what ``run.py`` saves; the trajectory model
    ``'model_traj'``, if present, is not part of the pose lifter and is ignored) or a bare state
    dict holding ``expand_conv.weight``. A DataParallel ``module.`` prefix is stripped. Pure:
    the input is not modified.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"expected a dict-like checkpoint, got {type(obj).__name__}; supported: {_SUPPORTED_LAYOUT}"
        )
    if "model_pos" in obj:
        state = obj["model_pos"]
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"checkpoint entry 'model_pos' is a {type(state).__name__}, not a state dict; "
                f"supported: {_SUPPORTED_LAYOUT}"
            )
    else:
        state = obj
    state = strip_prefix(tensors_only(state), "module.")
    if "expand_conv.weight" not in state:
        seen = [str(k) for k in list(obj.keys())[:12]]
        more = f", ... ({len(obj)} in all)" if len(obj) > 12 else ""
        raise CheckpointError(
            f"not a VideoPose3D checkpoint: keys seen {seen}{more}; supported: {_SUPPORTED_LAYOUT}"
        )
    return OrderedDict(state)


def build_model(spec: Weights, *, single_frame: bool = False) -> TemporalModelBase:
    """The architecture `spec` describes, randomly initialised (no weights are loaded here).

    ``single_frame=True`` gives :class:`TemporalModelOptimized1f` (same state dict) for inputs of
    exactly one receptive field.
    """
    cls = TemporalModelOptimized1f if single_frame else TemporalModel
    arch = dict(spec.arch)
    arch["filter_widths"] = list(arch["filter_widths"])
    return cls(**arch)


def create(
    spec: Weights,
    state_dict: Mapping[str, torch.Tensor] | None,
    *,
    device: str | torch.device = "cpu",
    half: bool = False,
) -> "VideoPose3DLifter":
    """Build the model `spec` names, load `state_dict` strictly (None: random), eval, move to device.

    `half` runs the convolutions under CUDA autocast (float16); outputs are float32 either way.
    Missing BatchNorm ``num_batches_tracked`` entries (pre-0.4.1 checkpoints) are tolerated;
    nothing else is relaxed.
    """
    model = build_model(spec)
    if state_dict is not None:
        load_strict(model, state_dict, what="the checkpoint")
    device = torch.device(device)
    model = model.to(device).eval()
    return VideoPose3DLifter(model, spec, device=device, half=half)


class VideoPose3DLifter:
    """Lifts COCO-17 pixel tracks to H36M-17 3D poses with a VideoPose3D :class:`TemporalModel`.

    Holds the model once; every call runs under ``torch.inference_mode()`` and returns CPU
    float32 numpy arrays. Long sequences are processed in windows of at most ``chunk_frames``
    output frames (each with its receptive-field context), so memory stays bounded.
    """

    #: Output frames per forward pass per sequence. At 1024 channels one activation of a pass
    #: with flip augmentation takes about 2 * 1024 * (chunk_frames + 242) * 4 bytes (~70 MB).
    chunk_frames: int = 8192

    def __init__(
        self,
        model: TemporalModelBase,
        weights: Weights,
        *,
        device: str | torch.device = "cpu",
        half: bool = False,
        kps_left: Sequence[int] = COCO17_LEFT,
        kps_right: Sequence[int] = COCO17_RIGHT,
        joints_left: Sequence[int] = H36M17_LEFT,
        joints_right: Sequence[int] = H36M17_RIGHT,
    ) -> None:
        if not isinstance(model, TemporalModel):
            raise TypeError(
                "VideoPose3DLifter needs the sequence model TemporalModel; "
                f"{type(model).__name__} only takes single receptive-field windows"
            )
        self.model = model
        self.weights = weights
        self.device = torch.device(device)
        self.half = bool(half) and self.device.type == "cuda"
        self.weights_sha256: str | None = None
        self._kps_swap = (list(kps_left) + list(kps_right), list(kps_right) + list(kps_left))
        self._joints_swap = (list(joints_left) + list(joints_right), list(joints_right) + list(joints_left))

    # ---- geometry ---------------------------------------------------------------------------

    @property
    def receptive_field(self) -> int:
        return self.model.receptive_field()

    @property
    def pad(self) -> int:
        """Context frames needed on each side of an output frame: ``(receptive_field - 1) // 2``."""
        return self.model.total_pad()

    @property
    def causal_shift(self) -> int:
        return self.model.total_causal_shift()

    # ---- public API -------------------------------------------------------------------------

    def lift(
        self,
        keypoints_px: np.ndarray,
        width: float,
        height: float,
        flip_augment: bool = True,
        pad_before: int | None = None,
        pad_after: int | None = None,
        *,
        chunk_frames: int | None = None,
    ) -> np.ndarray:
        """(T, 17, 2) pixel keypoints -> (T_out, 17, 3) float32 camera-space 3D joints.

        Frames are edge-padded by `pad_before` / `pad_after` (default: ``pad`` each side, giving
        T outputs). A caller that supplies real context frames (e.g. a shard with overlap) passes
        smaller pads; then ``T_out = T + pad_before + pad_after - (receptive_field - 1)`` and
        output frame i corresponds to input frame ``i - pad_before + pad`` (symmetric model).
        `flip_augment` is the official flip test-time augmentation.
        """
        padded = self.model_input(keypoints_px, width, height, pad_before, pad_after)
        return self._run([padded], [padded.shape[0] - self.receptive_field + 1], flip_augment, chunk_frames)[0]

    def lift_batch(
        self,
        sequences: Sequence[np.ndarray],
        width: float,
        height: float,
        flip_augment: bool = True,
        *,
        chunk_frames: int | None = None,
    ) -> list[np.ndarray]:
        """:meth:`lift` for many tracks of one video (default padding): a list of (T_i, 17, 3).

        Short tracks are packed into shared forward passes (each edge-padded to its own length,
        then right-extended to the longest in the pass; valid convolutions make the extra frames
        invisible to the real outputs), so results equal :meth:`lift` within float tolerance.
        """
        padded = [self.model_input(seq, width, height, None, None) for seq in sequences]
        n_out = [p.shape[0] - self.receptive_field + 1 for p in padded]
        return self._run(padded, n_out, flip_augment, chunk_frames)

    def model_input(
        self,
        keypoints_px: np.ndarray,
        width: float,
        height: float,
        pad_before: int | None = None,
        pad_after: int | None = None,
    ) -> np.ndarray:
        """The tensor :meth:`lift` feeds the model for one track, before flipping.

        Validates, normalises and edge-pads: (T + pad_before + pad_after, 17, 2) float32.
        """
        kps = np.asarray(keypoints_px)
        want = (self.model.num_joints_in, self.model.in_features)
        if kps.ndim != 3 or kps.shape[1:] != want or kps.shape[0] < 1:
            raise ValueError(
                f"keypoints_px must have shape (T>=1, {want[0]}, {want[1]}) in pixels, got {kps.shape}"
            )
        if not np.isfinite(kps).all():
            bad = np.unique(np.nonzero(~np.isfinite(kps))[0])
            raise ValueError(
                f"keypoints_px holds NaN/inf in {bad.size} frame(s) (first: {bad[:5].tolist()}); "
                "interpolate or drop missing detections before lifting: the temporal convolutions "
                f"would spread them over {self.receptive_field} frames"
            )
        default_before = self.pad + self.causal_shift
        default_after = self.pad - self.causal_shift
        before = default_before if pad_before is None else pad_before
        after = default_after if pad_after is None else pad_after
        for label, value in (("pad_before", before), ("pad_after", after)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{label} must be a non-negative int, got {value!r}")
        before, after = int(before), int(after)
        frames = kps.shape[0]
        n_out = frames + before + after - (self.receptive_field - 1)
        if n_out < 1:
            raise ValueError(
                f"{frames} frame(s) with pad_before={before} and pad_after={after} give {n_out} "
                f"output frames: the receptive field is {self.receptive_field} frames, so "
                f"T + pad_before + pad_after must be at least {self.receptive_field}; supply more "
                "context frames or larger pads"
            )
        norm = normalize_screen_coordinates(kps, width, height)
        if before or after:
            norm = np.pad(norm, ((before, after), (0, 0), (0, 0)), mode="edge")
        return norm

    # ---- internals --------------------------------------------------------------------------

    def _run(
        self,
        padded: list[np.ndarray],
        n_out: list[int],
        flip_augment: bool,
        chunk_frames: int | None,
    ) -> list[np.ndarray]:
        """Forward padded tracks in passes of at most ~`chunk_frames` output frames per track slot."""
        chunk = int(chunk_frames if chunk_frames is not None else self.chunk_frames)
        if chunk < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk}")
        context = self.receptive_field - 1
        budget = chunk + context  # padded input frames per pass, summed over packed tracks
        results: list[np.ndarray | None] = [None] * len(padded)
        order = sorted(range(len(padded)), key=lambda i: n_out[i])
        with torch.inference_mode():
            group: list[int] = []
            for idx in order:
                if n_out[idx] > chunk:  # long track: alone, in windows of `chunk` output frames
                    pieces = [
                        self._forward([padded[idx][start: min(start + chunk, n_out[idx]) + context]], flip_augment)[0]
                        for start in range(0, n_out[idx], chunk)
                    ]
                    results[idx] = np.concatenate(pieces, axis=0)
                    continue
                # Sorted by length, so the current track is the longest of the group.
                if group and (len(group) + 1) * padded[idx].shape[0] > budget:
                    self._forward_group(group, padded, n_out, flip_augment, results)
                    group = []
                group.append(idx)
            if group:
                self._forward_group(group, padded, n_out, flip_augment, results)
        return [r for r in results]  # type: ignore[misc]

    def _forward_group(
        self,
        group: list[int],
        padded: list[np.ndarray],
        n_out: list[int],
        flip_augment: bool,
        results: list[np.ndarray | None],
    ) -> None:
        longest = max(padded[i].shape[0] for i in group)
        batch = [
            padded[i] if padded[i].shape[0] == longest
            else np.pad(padded[i], ((0, longest - padded[i].shape[0]), (0, 0), (0, 0)), mode="edge")
            for i in group
        ]
        outputs = self._forward(batch, flip_augment)
        for i, out in zip(group, outputs):
            results[i] = out[: n_out[i]]

    def _forward(self, batch: list[np.ndarray], flip_augment: bool) -> list[np.ndarray]:
        """Equal-length padded inputs -> per-item outputs (official flip TTA when asked)."""
        x = torch.from_numpy(np.stack(batch)).to(self.device)
        n = x.shape[0]
        if flip_augment:
            flipped = x.clone()
            flipped[..., 0] *= -1
            flipped[:, :, self._kps_swap[0]] = flipped[:, :, self._kps_swap[1]]
            x = torch.cat([x, flipped], dim=0)
        y = forward_half_guarded(self, lambda: self.model(x), "VideoPose3D")
        if flip_augment:
            mirrored = y[n:].clone()
            mirrored[..., 0] *= -1
            mirrored[:, :, self._joints_swap[0]] = mirrored[:, :, self._joints_swap[1]]
            y = torch.stack([y[:n], mirrored], dim=0).mean(dim=0)
        y = y.cpu().numpy()
        return [np.ascontiguousarray(y[i], dtype=np.float32) for i in range(n)]


__all__ = [
    "TemporalModel",
    "TemporalModelBase",
    "TemporalModelOptimized1f",
    "VideoPose3DLifter",
    "WEIGHTS",
    "build_model",
    "checkpoint_format",
    "convert_checkpoint",
    "create",
    "normalize_screen_coordinates",
]
