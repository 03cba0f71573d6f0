"""DensePose R-CNN (detectron2's ``projects/DensePose``, ``densepose_rcnn_R_50_FPN_s1x``) on given boxes.

Guler, Neverova, Kokkinos, "DensePose: Dense Human Pose Estimation In The Wild", CVPR 2018, as
detectron2 re-trained it ("improved baselines": s1x schedule, Panoptic-FPN decoder). For every pixel of
a person's box it tells which of 24 body-surface charts the pixel shows (I, 0 = background) and where
on that chart it lies (U, V in [0, 1]). posepipe already has the boxes, so what runs is detectron2's
``GeneralizedRCNN.inference(batched_inputs, detected_instances=...)``: the backbone on the frame, then
only the DensePose branch of ``DensePoseROIHeads.forward_with_given_boxes`` (the RPN and the box head,
which would find boxes, are not built). Everything follows the code and config at the commit named in
tests/models/densepose_reference.py; the conventions that change numbers:

- input: ``DefaultPredictor``'s ``ResizeShortestEdge(800, max 1333)`` with Pillow's bilinear resize of
  the uint8 BGR frame (``ResizeTransform.apply_image``; new size ``int(x + 0.5)``), minus
  ``PIXEL_MEAN`` (BGR 103.53, 116.28, 123.675; std 1), zero-padded at the bottom/right to multiples of 32;
- backbone: models/fpn.py (detectron2's ResNet-50 with FrozenBN and the stride on the 1x1, FPN p2..p5);
- ``Decoder`` (``ROI_DENSEPOSE_HEAD.DECODER_ON``, on by default): per level 3x3 conv + ReLU and x2
  bilinear upsampling (align_corners=False) until stride 4, summed from p2 up, then a 1x1 conv;
- pooling: ``ROIPooler`` with ``POOLER_TYPE: "ROIAlign"`` (the config's; the default "ROIAlignV2" is
  *not* used), i.e. torchvision's ``roi_align(aligned=False)``: no half-pixel shift and RoIs at least
  one feature cell wide; 28x28, ``sampling_ratio=2``, one level (the decoder's, scale 1/4);
- ``DensePoseV1ConvXHead``: 8 x (3x3 conv 512, ReLU); ``DensePoseChartWithConfidencePredictor`` with
  confidences off, i.e. ``DensePoseChartPredictor``: four ``ConvTranspose2d(512, C, 4, stride 2, pad 1)``
  (coarse segmentation 2, fine segmentation 25, U 25, V 25), each then ``interpolate(scale_factor=2,
  bilinear, align_corners=False)``: 28 -> 56 -> 112;
- boxes: a frame box goes to the network input by ``ResizeTransform.apply_box`` (float64, then float32),
  and the chart comes back to the frame as ``detector_postprocess`` sends the box (float32 scale, clip
  to the frame, empty boxes dropped);
- the chart: ``densepose_chart_predictor_output_to_result`` (the int box by ``make_int_box``, truncation;
  labels = argmax of the fine segmentation resized to the box x (argmax of the coarse one > 0); U, V of
  the labelled chart), ``quantize_densepose_chart_result`` (I, U*255, V*255 as uint8, truncated), and
  for storage ``compress_quantized_densepose_chart_result``'s PNG (Pillow, ``optimize=True``, the three
  planes as an RGB image), kept as raw bytes: detectron2 wraps them in base64 text, which adds a third.

Layout: ROIAlign, the DensePose modules and model, the checkpoint reader, the weights table and
builders, the pre/post-processing and the predictor.
"""
from __future__ import annotations

import io
import math
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from posepipe.models.checkpoint import CheckpointError, load_strict, preview, read_checkpoint, sniff_container
from posepipe.models.download import sha256_file
from posepipe.models.fpn import FPN, SIZE_DIVISIBILITY, Conv2d
from posepipe.models.weights import Weights

# ROI_DENSEPOSE_HEAD of densepose/config.py and Base-DensePose-RCNN-FPN.yaml
PIXEL_MEAN = (103.530, 116.280, 123.675)   # BGR, MODEL.PIXEL_MEAN
PIXEL_STD = (1.0, 1.0, 1.0)
MIN_SIZE_TEST = 800
MAX_SIZE_TEST = 1333
POOLER_RESOLUTION = 28
POOLER_SAMPLING_RATIO = 2
POOLER_ALIGNED = False                     # POOLER_TYPE "ROIAlign" (ROIPooler: aligned=False)
DECODER_STRIDE = 4                         # DECODER_COMMON_STRIDE: the pooler's only level
NUM_STACKED_CONVS = 8
CONV_HEAD_DIM = 512
NUM_PATCHES = 24                           # fine segmentation has NUM_PATCHES + 1 channels (0: background)
NUM_COARSE_SEGM_CHANNELS = 2
DECONV_KERNEL = 4
UP_SCALE = 2
HEATMAP_SIZE = POOLER_RESOLUTION * 2 * UP_SCALE  # 112
OUTPUT_KEYS = ("coarse_segm", "fine_segm", "u", "v")


# ---------------------------------------------------------------------------------------------
# ROIAlign, as torchvision's CPU/CUDA kernels compute it
# ---------------------------------------------------------------------------------------------


def _sample_axis(start: torch.Tensor, bin_size: torch.Tensor, pooled: int, grid: int, size: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One axis of torchvision's ``pre_calc_for_bilinear_interpolate`` for K RoIs with a `grid` of samples
    per bin: (low index, high index, low weight, high weight), each (K, pooled * grid), bin-major.

    Float32 throughout, in the kernel's order of operations: ``start + p * bin + (i + .5) * bin / grid``;
    a sample more than one cell outside the map gets weight 0; the rest are clamped to the map.
    """
    p = torch.arange(pooled, dtype=start.dtype, device=start.device)
    i = torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5
    s = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]) + (i[None, None, :] * bin_size[:, None, None]) / grid
    s = s.reshape(len(start), pooled * grid)
    empty = (s < -1.0) | (s > size)
    s = s.clamp_min(0.0)
    low = s.to(torch.int64)
    top = low >= size - 1
    low = torch.where(top, torch.full_like(low, size - 1), low)
    high = torch.where(top, low, low + 1)
    s = torch.where(top, low.to(s.dtype), s)
    frac = s - low.to(s.dtype)
    keep = (~empty).to(s.dtype)
    return low, high, (1.0 - frac) * keep, frac * keep


def _roi_align_grid(features: torch.Tensor, batch: torch.Tensor, boxes: torch.Tensor, output_size: tuple[int, int],
                    bin_h: torch.Tensor, bin_w: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """RoIs that share one sampling grid: (K, C, PH, PW)."""
    _, _, height, width = features.shape
    ph, pw = output_size
    y_low, y_high, hy, ly = _sample_axis(boxes[:, 1], bin_h, ph, grid_h, height)
    x_low, x_high, hx, lx = _sample_axis(boxes[:, 0], bin_w, pw, grid_w, width)
    b = batch[:, None, None]

    def at(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:  # (K, Ys, Xs, C)
        return features[b, :, ys[:, :, None], xs[:, None, :]]

    def w(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:     # (K, Ys, Xs, 1)
        return (a[:, :, None] * c[:, None, :])[..., None]

    # w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4, left to right, as the kernel adds them
    val = w(hy, hx) * at(y_low, x_low)
    val = val + w(hy, lx) * at(y_low, x_high)
    val = val + w(ly, hx) * at(y_high, x_low)
    val = val + w(ly, lx) * at(y_high, x_high)
    k, c = val.shape[0], val.shape[-1]
    val = val.reshape(k, ph, grid_h, pw, grid_w, c)
    out = torch.zeros((k, ph, pw, c), dtype=val.dtype, device=val.device)
    for iy in range(grid_h):      # the kernel's loop order: iy outer, ix inner
        for ix in range(grid_w):
            out = out + val[:, :, iy, :, ix]
    out = out / float(max(grid_h * grid_w, 1))
    return out.permute(0, 3, 1, 2).contiguous()


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: int | tuple[int, int], spatial_scale: float,
              sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """``torchvision.ops.roi_align`` in plain torch (what detectron2's ``ROIAlign`` calls).

    features (N, C, H, W); rois (K, 5) as [batch index, x1, y1, x2, y2] in input pixels. `aligned`
    shifts the scaled box by -0.5 (detectron2's "ROIAlignV2"); without it a RoI is at least one cell
    wide and high (the legacy Detectron convention, "ROIAlign"). `sampling_ratio` > 0 takes that many
    samples per bin and axis; <= 0 takes ceil(roi size / output size) per RoI. Each output is the mean
    of its bilinear samples; a sample more than one cell outside the map counts as 0.
    """
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if features.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align needs features (N, C, H, W) and rois (K, 5), got {tuple(features.shape)} "
                         f"and {tuple(rois.shape)}")
    k = rois.shape[0]
    if k == 0:
        return features.new_zeros((0, features.shape[1], ph, pw))
    dtype = features.dtype
    batch = rois[:, 0].to(torch.int64)
    offset = 0.5 if aligned else 0.0
    # The kernel scales in double (spatial_scale is a double) and stores the corners as T.
    corners = (rois[:, 1:].to(torch.float64) * spatial_scale - offset).to(dtype)
    size_w = corners[:, 2] - corners[:, 0]
    size_h = corners[:, 3] - corners[:, 1]
    if not aligned:
        size_w, size_h = size_w.clamp_min(1.0), size_h.clamp_min(1.0)
    bin_h, bin_w = size_h / ph, size_w / pw
    if sampling_ratio > 0:
        return _roi_align_grid(features, batch, corners, (ph, pw), bin_h, bin_w, sampling_ratio, sampling_ratio)
    grid_h = torch.ceil(size_h / ph).to(torch.int64).tolist()
    grid_w = torch.ceil(size_w / pw).to(torch.int64).tolist()
    out = features.new_zeros((k, features.shape[1], ph, pw))
    for gh, gw in sorted(set(zip(grid_h, grid_w))):
        rows = torch.tensor([i for i in range(k) if (grid_h[i], grid_w[i]) == (gh, gw)], device=rois.device)
        out[rows] = _roi_align_grid(features, batch[rows], corners[rows], (ph, pw), bin_h[rows], bin_w[rows], gh, gw)
    return out


# ---------------------------------------------------------------------------------------------
# The DensePose modules and model
# ---------------------------------------------------------------------------------------------


class Decoder(nn.Module):
    """The Panoptic-FPN semantic head DensePose puts on the FPN: every level brought to stride 4, summed.

    Level p<s> gets max(1, s - 2) blocks of (3x3 conv 256 + ReLU [+ x2 bilinear upsampling while not
    yet at stride 4]); the activation lives inside the conv (detectron2's Conv2d), so the Sequential
    indices of the convs are 0, 2, 4 as in the checkpoint keys (``p4.2.weight``).
    """

    def __init__(self, in_channels: int = 256, conv_dims: int = 256, num_classes: int = 256,
                 strides: Sequence[int] = (4, 8, 16, 32), common_stride: int = DECODER_STRIDE):
        super().__init__()
        self.levels = []
        for stride in strides:
            ops: list[nn.Module] = []
            for k in range(max(1, int(math.log2(stride) - math.log2(common_stride)))):
                ops.append(Conv2d(in_channels if k == 0 else conv_dims, conv_dims, kernel_size=3, padding=1, bias=True,
                                  activation=F.relu))
                if stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            name = f"p{int(math.log2(stride))}"
            self.add_module(name, nn.Sequential(*ops))
            self.levels.append(name)
        self.predictor = nn.Conv2d(conv_dims, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = getattr(self, self.levels[0])(features[0])
        for name, feature in zip(self.levels[1:], features[1:]):
            x = x + getattr(self, name)(feature)
        return self.predictor(x)


class DensePoseV1ConvXHead(nn.Module):
    """``body_conv_fcn1`` .. ``8``: 3x3 conv to 512 channels + ReLU, eight times, on the 28x28 pooled RoI."""

    def __init__(self, in_channels: int = 256, hidden_dim: int = CONV_HEAD_DIM, n_convs: int = NUM_STACKED_CONVS):
        super().__init__()
        self.n_convs = n_convs
        for i in range(n_convs):
            self.add_module(f"body_conv_fcn{i + 1}", nn.Conv2d(in_channels if i == 0 else hidden_dim, hidden_dim, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_convs):
            x = F.relu(getattr(self, f"body_conv_fcn{i + 1}")(x))
        return x


class DensePoseChartPredictor(nn.Module):
    """Four transposed convolutions (x2), each followed by x2 bilinear interpolation (align_corners=False).

    Returns (coarse_segm (K, 2, 112, 112), fine_segm (K, 25, ...), u (K, 25, ...), v (K, 25, ...)),
    unnormalised scores and raw U, V (no sigmoid: the chart result reads them as they are).
    """

    def __init__(self, in_channels: int = CONV_HEAD_DIM, n_segm: int = NUM_COARSE_SEGM_CHANNELS,
                 n_patches: int = NUM_PATCHES, kernel: int = DECONV_KERNEL, scale: int = UP_SCALE):
        super().__init__()
        pad = int(kernel / 2 - 1)
        self.ann_index_lowres = nn.ConvTranspose2d(in_channels, n_segm, kernel, stride=2, padding=pad)
        self.index_uv_lowres = nn.ConvTranspose2d(in_channels, n_patches + 1, kernel, stride=2, padding=pad)
        self.u_lowres = nn.ConvTranspose2d(in_channels, n_patches + 1, kernel, stride=2, padding=pad)
        self.v_lowres = nn.ConvTranspose2d(in_channels, n_patches + 1, kernel, stride=2, padding=pad)
        self.scale_factor = scale

    def interp2d(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.interp2d(self.ann_index_lowres(x)), self.interp2d(self.index_uv_lowres(x)),
                self.interp2d(self.u_lowres(x)), self.interp2d(self.v_lowres(x)))


class DensePoseROIHeads(nn.Module):
    """The DensePose branch of detectron2's ``DensePoseROIHeads`` (names as in the checkpoint)."""

    def __init__(self):
        super().__init__()
        self.decoder = Decoder()
        self.densepose_head = DensePoseV1ConvXHead()
        self.densepose_predictor = DensePoseChartPredictor()

    def pool(self, decoded: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_align(decoded, rois, POOLER_RESOLUTION, 1.0 / DECODER_STRIDE, POOLER_SAMPLING_RATIO, POOLER_ALIGNED)

    def forward(self, decoded: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.densepose_predictor(self.densepose_head(self.pool(decoded, rois)))


class DensePoseRCNN(nn.Module):
    """Backbone + DensePose branch. ``forward(images, rois)``: normalised, padded BGR (N, 3, H, W) and
    RoIs (K, 5) [image index, x1, y1, x2, y2] in those images' pixels -> (coarse_segm, fine_segm, u, v)."""

    def __init__(self, depth: int = 50):
        super().__init__()
        self.backbone = FPN(depth)
        self.roi_heads = DensePoseROIHeads()

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        """The per-frame part: the decoder's stride-4 map (N, 256, H/4, W/4) the RoIs are pooled from."""
        return self.roi_heads.decoder(self.backbone(images))

    def forward(self, images: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.roi_heads(self.decode(images), rois)


# ---------------------------------------------------------------------------------------------
# The checkpoint: detectron2's pickled-numpy container, read without running code
# ---------------------------------------------------------------------------------------------

# State dict prefixes of the full R-CNN that a model run on given boxes does not have.
UNUSED_PREFIXES = {
    "proposal_generator.": "the RPN (it proposes boxes; posepipe gives them)",
    "roi_heads.box_head.": "the box head (it classifies and refines proposals)",
    "roi_heads.box_predictor.": "the box predictor (idem)",
}
# Buffers older detectron2 saved; detectron2 itself takes them from the config (PIXEL_MEAN/STD).
IGNORED_BUFFERS = ("pixel_mean", "pixel_std")
CONTAINER_KEYS = ("model", "__author__", "matching_heuristics")


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """Stands in for ``_codecs.encode``, which protocol-2 pickles written by Python 3 use to carry bytes
    (numpy's array payload): str -> bytes in latin-1, nothing else."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(text).__name__}, {encoding!r}): only latin-1 text")
    return text.encode("latin-1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only callables a detectron2 .pkl may name: numpy's array/dtype/scalar rebuilders, OrderedDict."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                         ("collections", "OrderedDict"): OrderedDict, ("_codecs", "encode"): _latin1_encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    for name in dir(getattr(np, "dtypes", None) or object()):
        obj = getattr(np.dtypes, name, None)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            table[("numpy.dtypes", name)] = obj
    return table


class _NumpyOnlyUnpickler(pickle.Unpickler):
    allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not allowed") from None


def read_detectron2_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle a detectron2 model-zoo ``.pkl`` (numpy arrays in dicts) without executing code from it.

    As detectron2 reads it (``pickle.load(f, encoding="latin1")``, so Python 2 files load too), but with
    an unpickler that knows numpy's array rebuilders and OrderedDict and nothing else. Raises
    CheckpointError naming the file and what is wrong.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        sniff_container(path)  # its sentence for a missing file or a directory
    with open(path, "rb") as f:
        head = f.read(2)
        if not (head[:1] == b"\x80" and len(head) == 2 and 2 <= head[1] <= 5):
            sniff_container(path)  # says what the file is instead (HTML page, zip, text, ...)
            raise CheckpointError(f"{path} is not a pickle: it is not detectron2's .pkl container")
        f.seek(0)
        try:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as exc:
            if "is not allowed" in str(exc) or "refused" in str(exc):
                raise CheckpointError(
                    f"refused to load {path}: {exc}; detectron2's model files hold numpy arrays only, so this file "
                    f"has no reason to name it. posepipe never executes code from checkpoints") from None
            raise CheckpointError(_damaged(path, exc)) from None
        except (EOFError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise CheckpointError(_damaged(path, exc)) from None


def _damaged(path: str, exc: BaseException) -> str:
    """The sentence for a .pkl that unpickles to nothing: the same words models.checkpoint uses for a
    torch file cut short ("ends early or is damaged"), with its size, so a half-finished download reads
    the same whichever container it is; then what the unpickler said and what to do."""
    size = os.path.getsize(path)
    return (f"{path} ends early or is damaged ({size / 1e6:.1f} MB; detectron2 .pkl container; "
            f"{type(exc).__name__}: {exc}): the file was cut short or corrupted in transfer; download or copy it again")


def read_densepose_checkpoint(path: str | os.PathLike[str]) -> Any:
    """The file as data: detectron2's pickled-numpy ``.pkl`` (the release), or a torch file (a training
    run's ``model_final.pth``, ``{'model': state_dict, 'optimizer', ...}``) through models.checkpoint."""
    path = os.fspath(path)
    try:
        container = sniff_container(path)
    except CheckpointError as exc:
        if "plain Python pickle" in str(exc):
            return read_detectron2_pickle(path)
        raise
    del container
    return read_checkpoint(path)


def _model_state(checkpoint: Any) -> Mapping[str, Any] | None:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        return checkpoint["model"]
    return None


def checkpoint_format(checkpoint: Any) -> str | None:
    """The layout `checkpoint` (already read) is in, by its keys; None if it is not DensePose R-CNN's."""
    state = _model_state(checkpoint)
    if state is None or "roi_heads.densepose_predictor.index_uv_lowres.weight" not in state:
        return None
    author = checkpoint.get("__author__")
    arrays = "numpy arrays" if any(isinstance(v, np.ndarray) for v in state.values()) else "tensors"
    return (f"detectron2 DensePose R-CNN, {{'model': {arrays}" + (f", '__author__': {author!r}" if author else "")
            + (", 'matching_heuristics'" if "matching_heuristics" in checkpoint else "") + ", ...}")


def _tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32)
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return torch.from_numpy(np.array(value, dtype=np.float32))
    raise CheckpointError(f"entry {name!r} is a {type(value).__name__}"
                          + (f" of {value.dtype}" if isinstance(value, np.ndarray) else "") + ", not a numeric array")


def split_checkpoint(checkpoint: Any) -> tuple["OrderedDict[str, torch.Tensor]", tuple[str, ...]]:
    """(the DensePose model's state dict, the file's entries left out on purpose).

    Left out, by name: the RPN (``proposal_generator.*``, old files' ``anchor_generator.cell_anchors``
    included), the box head and predictor (``roi_heads.box_head.*``, ``roi_heads.box_predictor.*``) and
    ``pixel_mean`` / ``pixel_std`` (taken from the config, as detectron2 does). Everything else must be
    the model's, with its shape (checked by the strict load): an unknown entry is refused, by name.
    """
    state = _model_state(checkpoint)
    if state is None:
        top = list(checkpoint.keys()) if isinstance(checkpoint, Mapping) else [type(checkpoint).__name__]
        raise CheckpointError(f"not detectron2's container: expected a dict with 'model' (a dict of arrays), "
                              f"found {preview(top)}")
    kept: OrderedDict[str, torch.Tensor] = OrderedDict()
    dropped: list[str] = []
    for name, value in state.items():
        name = str(name)
        if name.startswith(tuple(UNUSED_PREFIXES)) or name in IGNORED_BUFFERS:
            dropped.append(name)
            continue
        kept[name] = _tensor(name, value)
    return kept, tuple(dropped)


def convert_checkpoint(checkpoint: Any) -> "OrderedDict[str, torch.Tensor]":
    """detectron2's container -> the DensePose model's state dict (see `split_checkpoint`)."""
    return split_checkpoint(checkpoint)[0]


# ---------------------------------------------------------------------------------------------
# Weights table and builders
# ---------------------------------------------------------------------------------------------

_URL = "https://dl.fbaipublicfiles.com/densepose/densepose_rcnn_R_50_FPN_s1x/165712039/model_final_162be9.pkl"
# Counted by tests/models/test_densepose.py (torch.utils.flop_counter): one person (ROIAlign is not a
# counted op; the head and predictor are), and one 800x1088 network input (a 576x768 frame such as
# vtest.avi) through the ResNet-50, the FPN and the decoder.
GMACS_PER_PERSON = 14.4
GMACS_PER_FRAME_800x1088 = 180.4

WEIGHTS: dict[str, Weights] = {
    "densepose_rcnn_R_50_FPN_s1x": Weights(
        name="densepose_rcnn_R_50_FPN_s1x", family="densepose", url=_URL,
        filename="densepose_rcnn_R_50_FPN_s1x-model_final_162be9.pkl", source_format="detectron2",
        stage="surface", arch={"depth": 50}, hash_prefix="162be9", input_size=None,
        mean=PIXEL_MEAN, std=PIXEL_STD, color="BGR", license="Apache-2.0 (detectron2)",
        paper="Guler, Neverova, Kokkinos, DensePose: Dense Human Pose Estimation In The Wild, CVPR 2018",
        metrics={"densepose_AP_GPS": 63.7, "densepose_AP_GPSm": 65.3}, gmacs=GMACS_PER_PERSON,
        notes=("detectron2 model zoo 165712039 (R_50_FPN_s1x, Panoptic-FPN decoder); run on given boxes. "
               f"gmacs is per person; each frame costs about {GMACS_PER_FRAME_800x1088:g} GMACs more "
               "(backbone, FPN and decoder at 800 px)."),
    ),
}


def build_densepose(*, depth: int = 50) -> DensePoseRCNN:
    """The bare network (PyTorch default init, no weights loaded)."""
    return DensePoseRCNN(depth)


def create(spec: Weights, state_dict: Mapping[str, torch.Tensor] | None, *, device: torch.device,
           half: bool = False) -> "DensePosePredictor":
    """Build `spec`'s network, load `state_dict` strictly (None: seeded random weights, for plumbing
    checks only; the caller warns), eval mode, on `device`. `half` (fp16 autocast) applies on CUDA only."""
    if state_dict is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_densepose(**spec.arch)
    else:
        model = build_densepose(**spec.arch)
        load_strict(model, state_dict, optional=(), what="the checkpoint")
    model.eval().to(device)
    return DensePosePredictor(model, spec, device=device, half=half)


def load_densepose(path: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                   name: str = "densepose_rcnn_R_50_FPN_s1x") -> "DensePosePredictor":
    """The predictor with the weights of `path` (the official ``model_final_162be9.pkl`` or a file of its
    layout). Raises CheckpointError, naming the file, for a file that is not that model's: what it lacks,
    what it has that the model does not, and what it refuses to unpickle."""
    spec = WEIGHTS[name]
    checkpoint = read_densepose_checkpoint(path)
    if checkpoint_format(checkpoint) is None:
        found = _model_state(checkpoint)
        keys = list(found) if found is not None else (list(checkpoint) if isinstance(checkpoint, Mapping) else [])
        raise CheckpointError(f"{name}: {path} is not a DensePose R-CNN checkpoint (no "
                              f"'roi_heads.densepose_predictor.*' under 'model'; it holds {preview(keys) or 'nothing'})")
    try:
        predictor = create(spec, convert_checkpoint(checkpoint), device=torch.device(device))
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {path}: {exc}") from None
    predictor.weights_sha256 = sha256_file(path)
    return predictor


# ---------------------------------------------------------------------------------------------
# Pre/post-processing: DefaultPredictor's resize, the boxes' round trip, the chart result
# ---------------------------------------------------------------------------------------------


def resized_shape(height: int, width: int, short: int = MIN_SIZE_TEST, longest: int = MAX_SIZE_TEST) -> tuple[int, int]:
    """``ResizeShortestEdge.get_output_shape``: (new height, new width)."""
    size = short * 1.0
    scale = size / min(height, width)
    newh, neww = (size, scale * width) if height < width else (scale * height, size)
    if max(newh, neww) > longest:
        scale = longest * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize_frame(image_bgr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``ResizeTransform.apply_image`` for a uint8 frame: Pillow's bilinear resize (its antialiased
    filter when shrinking), not OpenCV's, which gives other pixels."""
    if image_bgr.shape[:2] == tuple(shape):
        return image_bgr
    return np.asarray(Image.fromarray(image_bgr).resize((shape[1], shape[0]), Image.BILINEAR))


def boxes_to_input(boxes_xyxy: np.ndarray, frame_hw: tuple[int, int], input_hw: tuple[int, int]) -> torch.Tensor:
    """``ResizeTransform.apply_box`` on float64 frame boxes, then float32 (``Boxes``)."""
    (h, w), (new_h, new_w) = frame_hw, input_hw
    b = np.array(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    corners = b[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 2)
    corners[:, 0] = corners[:, 0] * (new_w * 1.0 / w)
    corners[:, 1] = corners[:, 1] * (new_h * 1.0 / h)
    corners = corners.reshape(-1, 4, 2)
    return torch.as_tensor(np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1), dtype=torch.float32)


def boxes_to_frame(input_boxes: torch.Tensor, frame_hw: tuple[int, int], input_hw: tuple[int, int]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``detector_postprocess`` on the boxes: scaled in float32 to the frame, clipped to it; and which
    are non-empty (detectron2 drops the others, with their DensePose results)."""
    (h, w), (in_h, in_w) = frame_hw, input_hw
    boxes = input_boxes.clone()
    boxes[:, 0::2] *= w / in_w
    boxes[:, 1::2] *= h / in_h
    x1, y1 = boxes[:, 0].clamp(min=0, max=w), boxes[:, 1].clamp(min=0, max=h)
    x2, y2 = boxes[:, 2].clamp(min=0, max=w), boxes[:, 3].clamp(min=0, max=h)
    boxes = torch.stack((x1, y1, x2, y2), dim=-1)
    return boxes, ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)


def int_box(box_xyxy: torch.Tensor) -> tuple[int, int, int, int]:
    """``BoxMode.convert(XYXY -> XYWH)`` in float32, then ``make_int_box`` (truncation toward zero)."""
    xywh = torch.stack((box_xyxy[0], box_xyxy[1], box_xyxy[2] - box_xyxy[0], box_xyxy[3] - box_xyxy[1]))
    x, y, w, h = xywh.long().tolist()
    return x, y, w, h


def chart_result(coarse_segm: torch.Tensor, fine_segm: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                 box_xyxy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``densepose_chart_predictor_output_to_result`` for one person: outputs (1, C, 112, 112) and its
    frame box -> labels (h, w) int64 and uv (2, h, w) float32 over the int box (w, h at least 1)."""
    _, _, w, h = int_box(box_xyxy)
    w, h = max(int(w), 1), max(int(h), 1)

    def resize(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, (h, w), mode="bilinear", align_corners=False)

    coarse = resize(coarse_segm).argmax(dim=1)
    labels = (resize(fine_segm).argmax(dim=1) * (coarse > 0).long()).squeeze(0)
    u_box, v_box = resize(u)[0], resize(v)[0]
    index = labels[None]
    # uv[c][labels == p] = u_box[p][labels == p] for p in 1..24, as a gather; label 0 keeps 0.
    uv = torch.stack((u_box.gather(0, index)[0], v_box.gather(0, index)[0]))
    uv = torch.where(labels[None] > 0, uv, torch.zeros((), dtype=uv.dtype))
    return labels, uv.to(torch.float32)


def quantize(labels: torch.Tensor, uv: torch.Tensor) -> np.ndarray:
    """``quantize_densepose_chart_result``: (3, h, w) uint8 = I, U * 255, V * 255 (clamped, truncated)."""
    out = torch.zeros((3, *labels.shape), dtype=torch.uint8)
    out[0] = labels.cpu()
    out[1:] = (uv.cpu() * 255).clamp(0, 255).byte()
    return out.numpy()


def encode_iuv_png(iuv: np.ndarray) -> bytes:
    """The PNG of ``compress_quantized_densepose_chart_result`` (before its base64): the (3, h, w) planes
    as an RGB image, Pillow, ``optimize=True``."""
    if iuv.ndim != 3 or iuv.shape[0] != 3 or iuv.dtype != np.uint8:
        raise ValueError(f"an IUV chart is (3, h, w) uint8, got {iuv.shape} {iuv.dtype}")
    stream = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.moveaxis(iuv, 0, -1))).save(stream, format="png", optimize=True)
    return stream.getvalue()


def decode_iuv_png(data: bytes) -> np.ndarray:
    """``decompress_compressed_densepose_chart_result`` without the base64: PNG bytes -> (3, h, w) uint8."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "RGB":
            raise ValueError(f"not a DensePose IUV chart: a PNG of mode {image.mode}, where a chart is an RGB PNG "
                             f"(its three planes I, U, V)")
        return np.ascontiguousarray(np.moveaxis(np.asarray(image, dtype=np.uint8), -1, 0))


# ---------------------------------------------------------------------------------------------
# The predictor
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DensePoseChart:
    """One person's chart, as detectron2 stores it.

    box_xyxy: the box detectron2 reports (the given box through the network input and back, clipped to
    the frame), float32. box_xywh: the integer box the chart covers (``make_int_box``; w, h >= 1).
    iuv: (3, h, w) uint8: I (0 background, 1..24 the chart), U * 255, V * 255.
    """

    box_xyxy: np.ndarray
    box_xywh: tuple[int, int, int, int]
    iuv: np.ndarray

    def png(self) -> bytes:
        return encode_iuv_png(self.iuv)


@dataclass
class FrameInput:
    """One frame as the network sees it."""

    image: torch.Tensor            # (3, H_in, W_in) float32 BGR, resized, not normalised
    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]


class DensePosePredictor:
    """DensePose R-CNN on given boxes: frames (uint8 BGR) and their person boxes in, charts out."""

    def __init__(self, model: DensePoseRCNN, weights: Weights, *, device: torch.device, half: bool = False,
                 min_size: int = MIN_SIZE_TEST, max_size: int = MAX_SIZE_TEST):
        self.model = model
        self.weights = weights
        self.device = device
        self.half = bool(half) and device.type == "cuda"
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.weights_sha256: str | None = None
        self._mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(3, 1, 1)

    def preprocess(self, image_bgr: np.ndarray) -> FrameInput:
        image = np.asarray(image_bgr)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape[:2]:
            raise ValueError(f"DensePose expects an (H, W, 3) uint8 BGR frame, got shape {image.shape} dtype {image.dtype}")
        frame_hw = (int(image.shape[0]), int(image.shape[1]))
        input_hw = resized_shape(*frame_hw, self.min_size, self.max_size)
        resized = resize_frame(image, input_hw)
        tensor = torch.as_tensor(np.ascontiguousarray(resized).astype("float32").transpose(2, 0, 1))
        return FrameInput(tensor, frame_hw, input_hw)

    def batch(self, inputs: Sequence[FrameInput]) -> torch.Tensor:
        """``preprocess_image``: normalise, pad bottom/right with zeros to the largest, multiple of 32."""
        height = max(x.input_hw[0] for x in inputs)
        width = max(x.input_hw[1] for x in inputs)
        height, width = (-(-height // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY, -(-width // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY)
        out = torch.zeros((len(inputs), 3, height, width), dtype=torch.float32)
        for i, x in enumerate(inputs):
            out[i, :, : x.input_hw[0], : x.input_hw[1]] = (x.image - self._mean) / self._std
        return out

    @torch.inference_mode()
    def forward_outputs(self, images_bgr: Sequence[np.ndarray], boxes_xyxy: Sequence[np.ndarray]
                        ) -> list[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]]:
        """Per frame: (the predictor's outputs for its boxes, each (K, C, 112, 112) on the CPU, the boxes
        in frame pixels as detectron2 reports them, which of them are non-empty).

        Frames of one size are batched together (zero padding to one size, as detectron2); frames of other
        sizes run apart, so a frame's result never depends on the others in the call.
        """
        if len(images_bgr) != len(boxes_xyxy):
            raise ValueError(f"{len(images_bgr)} frames but {len(boxes_xyxy)} box arrays")
        inputs = [self.preprocess(image) for image in images_bgr]
        results: list[Any] = [None] * len(inputs)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(x.input_hw, []).append(i)
        for members in groups.values():
            images = self.batch([inputs[i] for i in members]).to(self.device)
            boxes = [boxes_to_input(np.asarray(boxes_xyxy[i], dtype=np.float64).reshape(-1, 4), inputs[i].frame_hw,
                                    inputs[i].input_hw) for i in members]
            rois = torch.cat([torch.cat([torch.full((len(b), 1), float(j)), b], dim=1) for j, b in enumerate(boxes)])
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
                decoded = self.model.decode(images)
                outputs = self.model.roi_heads(decoded, rois.to(self.device)) if len(rois) else None
            start = 0
            for j, i in enumerate(members):
                n = len(boxes[j])
                if outputs is None:
                    per = {k: torch.zeros((0, c, HEATMAP_SIZE, HEATMAP_SIZE)) for k, c in
                           zip(OUTPUT_KEYS, (NUM_COARSE_SEGM_CHANNELS,) + (NUM_PATCHES + 1,) * 3)}
                else:
                    per = {k: o[start:start + n].float().cpu() for k, o in zip(OUTPUT_KEYS, outputs)}
                frame_boxes, nonempty = boxes_to_frame(boxes[j], inputs[i].frame_hw, inputs[i].input_hw)
                results[i] = (per, frame_boxes, nonempty)
                start += n
        return results

    def predict_batch(self, images_bgr: Sequence[np.ndarray], boxes_xyxy: Sequence[np.ndarray]
                      ) -> list[list[DensePoseChart | None]]:
        """Per frame, per given box (xyxy, frame pixels): its chart, or None where detectron2 drops the box
        (nothing of it inside the frame)."""
        charts: list[list[DensePoseChart | None]] = []
        for outputs, frame_boxes, nonempty in self.forward_outputs(images_bgr, boxes_xyxy):
            row: list[DensePoseChart | None] = []
            for k in range(len(frame_boxes)):
                if not bool(nonempty[k]):
                    row.append(None)
                    continue
                labels, uv = chart_result(*(outputs[key][k:k + 1] for key in OUTPUT_KEYS), frame_boxes[k])
                row.append(DensePoseChart(frame_boxes[k].numpy().copy(), int_box(frame_boxes[k]), quantize(labels, uv)))
            charts.append(row)
        return charts

    def predict(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> list[DensePoseChart | None]:
        return self.predict_batch([image_bgr], [boxes_xyxy])[0]


__all__ = [
    "DensePoseChart", "DensePosePredictor", "DensePoseRCNN", "WEIGHTS", "build_densepose", "checkpoint_format",
    "chart_result", "convert_checkpoint", "create", "decode_iuv_png", "encode_iuv_png", "load_densepose", "quantize",
    "read_densepose_checkpoint", "roi_align", "split_checkpoint",
]
