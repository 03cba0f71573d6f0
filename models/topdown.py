"""Top-down 2D pose as mmpose 1.x runs it: person boxes -> affine crops -> network -> image keypoints.

Shared by every 2D family trained with mmpose (RTMPose, SimpleBaseline, RLE); HRNet has its own box
convention and crop kernel (both crops are :mod:`posepipe.models.warp`'s). Each family file supplies the
network and how its outputs are flip-averaged and decoded; everything here is the mmpose 1.3.2
inference path (``apis/inference.py`` ``inference_topdown``), reproduced to the bit where the
golden READMEs (``shared/golden/<name>/README.md``) say it is:

- ``GetBBoxCenterScale(padding=1.25)``: ``center = (x1 + x2) / 2``, ``scale = (w, h) * 1.25`` in
  pixels (no 200-px unit), ``x2 = x + w`` (no -1), all float32, boxes never clipped;
- ``TopdownAffine``: the 3:4 (input w/h) aspect fix, ``get_warp_matrix`` (the centre and the point
  half a scale-width to its left, ``cv2.getAffineTransform`` on float32 points) and
  ``cv2.warpAffine(INTER_LINEAR)`` with a black border, byte for byte as OpenCV 4.x computes it
  (:func:`warp_crops_fixed_point`, computed by :mod:`posepipe.models.warp`, whatever OpenCV is
  installed); the crop stays BGR uint8;
- ``PoseDataPreprocessor``: BGR -> RGB, ``float()``, ``(x - mean) / std`` on 0..255 values with the
  weights record's mean/std (done in torch, on the model's device);
- flip test: a second pass on ``inputs.flip(-1)`` (here in the same batch);
- back to the image (``TopdownPoseEstimator.add_pred_to_datasample``):
  ``keypoints / input_size * scale + center - 0.5 * scale`` in float64, no half-pixel shift.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from posepipe.models import ondevice, warp
from posepipe.models.precision import fall_back_to_fp32, forward_half_flagged, forward_half_guarded
from posepipe.models.skeletons import skeleton_flip_indices
from posepipe.models.weights import Weights

BOX_PADDING = 1.25  # GetBBoxCenterScale's default, as every mmpose top-down config uses it


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------

def check_image(image: Any) -> None:
    """An (H, W, 3) uint8 BGR frame, or a ValueError saying what was given instead."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {desc}")


def as_boxes_xywh(bboxes_xywh: Any, dtype: Any = np.float32) -> np.ndarray:
    """(K, 4) [x, y, w, h] boxes, finite, non-negative sizes; (0, 4) for none."""
    boxes = np.asarray(bboxes_xywh, dtype=dtype)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"bboxes_xywh must be (K, 4) [x, y, w, h], got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("bboxes_xywh holds NaN or infinite values")
    if (boxes[:, 2:] < 0).any():
        raise ValueError("bboxes_xywh has a negative width or height; boxes are [x, y, w, h], not [x1, y1, x2, y2]")
    return boxes


# --------------------------------------------------------------------------------------------
# Boxes and the affine crop
# --------------------------------------------------------------------------------------------

def bbox_center_scale(bboxes_xywh: Any, padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """``GetBBoxCenterScale``: (K, 4) [x, y, w, h] -> centres (K, 2) and padded sizes (K, 2), float32 px."""
    boxes = as_boxes_xywh(bboxes_xywh)
    xyxy = boxes.copy()
    xyxy[:, 2:] = boxes[:, 2:] + boxes[:, :2]  # bbox_xywh2xyxy: x2 = x + w
    center = (xyxy[:, 2:] + xyxy[:, :2]) * 0.5
    scale = (xyxy[:, 2:] - xyxy[:, :2]) * padding
    return center.astype(np.float32), scale.astype(np.float32)


def fix_aspect_ratio(bbox_scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """``TopdownAffine._fix_aspect_ratio``: widen or heighten (w, h) to w / h = `aspect_ratio`, float32."""
    bbox_scale = np.asarray(bbox_scale, dtype=np.float32).reshape(-1, 2)
    w, h = np.hsplit(bbox_scale, [1])
    return np.where(w > h * aspect_ratio, np.hstack([w, w / aspect_ratio]), np.hstack([h * aspect_ratio, h]))


def box_to_center_scale(bboxes_xywh: Any, input_size_wh: tuple[int, int],
                        padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Boxes -> the crop's centre and size (the ``input_center`` / ``input_scale`` mmpose maps back with)."""
    w, h = input_size_wh
    center, bbox_scale = bbox_center_scale(bboxes_xywh, padding)
    return center, fix_aspect_ratio(bbox_scale, w / h).astype(np.float32)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direction = a - b
    return b + np.r_[-direction[1], direction[0]]


def get_warp_matrix(center: np.ndarray, scale: np.ndarray, output_size_wh: tuple[int, int], *,
                    inv: bool = False) -> np.ndarray:
    """mmpose's ``get_warp_matrix`` without rotation or shift: (2, 3) float64, image -> crop.

    It maps the centre to the crop centre and the point half a scale-width left of it to the crop's
    left edge, i.e. a uniform zoom ``output_w / scale_w`` (only the width of `scale` is used).
    """
    center = np.asarray(center, dtype=np.float32)
    src_w = np.asarray(scale, dtype=np.float32)[0]
    dst_w, dst_h = output_size_wh
    src_dir = np.array([src_w * -0.5, 0.0])
    dst_dir = np.array([dst_w * -0.5, 0.0])
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + src_dir
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return warp.affine_transform(dst, src) if inv else warp.affine_transform(src, dst)


def warp_crops_fixed_point(image_bgr: np.ndarray, matrices: Sequence[np.ndarray],
                           output_size_wh: tuple[int, int]) -> np.ndarray:
    """The affine crops of one frame exactly as OpenCV 4.x's ``cv2.warpAffine(INTER_LINEAR)`` makes them
    (constant-0 border): (K, H, W, 3) uint8 in the frame's channel order.

    mmpose's reference outputs were made with OpenCV 4.10, whose bilinear warp works in fixed point
    (1/32 px positions, 15-bit weights); OpenCV 5.0 and 5.1 compute ``warpAffine`` in other ways (up to
    3 grey levels apart, on thousands of pixels of a crop). So the crop is :mod:`posepipe.models.warp`'s
    integer arithmetic, the same function the device path runs, whatever OpenCV is installed.
    """
    check_image(image_bgr)
    return warp.warp_crops(image_bgr, matrices, output_size_wh, "fixed_point")


def crop_to_image(keypoints: np.ndarray, centers: np.ndarray, scales: np.ndarray,
                  input_size_wh: tuple[int, int]) -> np.ndarray:
    """Crop pixels (K, J, 2) -> image pixels, float32: ``kp / input_size * scale + center - 0.5 * scale``.

    numpy promotes ``kp / (w, h)`` to float64 (the sizes are ints), so the whole mapping is float64
    as in mmpose; keypoints that are float64 already (RLE) are not rounded before it.
    """
    size = np.asarray(input_size_wh)
    scales = np.asarray(scales, dtype=np.float32).reshape(-1, 1, 2)
    centers = np.asarray(centers, dtype=np.float32).reshape(-1, 1, 2)
    out = np.asarray(keypoints) / size * scales + centers - 0.5 * scales
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# The predictor every mmpose top-down family shares
# --------------------------------------------------------------------------------------------

class TopdownPredictor:
    """Person boxes in a BGR frame -> keypoints (K, J, 2) in image pixels and scores (K, J).

    A family subclasses it with its network output handling: ``_merge_flip`` (flip-test average
    of the raw outputs of the input and of its mirror), ``_post`` (what the no-flip path applies to
    raw outputs) and ``_decode`` (outputs -> keypoints in crop pixels and scores). The interface is
    the same for every 2D family (HRNet's included): ``predict``, ``predict_batch``, ``weights``,
    ``weights_sha256``, ``input_size``, ``num_joints``. Outputs are CPU numpy float32.

    :meth:`predict_frames` is the same prediction for frames and boxes already on the device, with
    device tensors out and no host sync (``supports_device``); a family's ``_decode_device`` is what
    makes it possible (``_decode`` is ``_decode_device`` brought to the host, or its numpy twin).
    """

    label = "top-down model"  # named in fp16 overflow warnings
    supports_device = True    # predict_frames: crops, network, decoding and mapping back on the device

    def __init__(self, model: nn.Module, weights: Weights, device: torch.device, half: bool = False):
        if weights.input_size is None or weights.mean is None or weights.std is None:
            raise ValueError(f"{weights.name}: the weights record needs input_size, mean and std")
        self.model = model
        self.weights = weights
        self.device = torch.device(device)
        self.half = bool(half) and self.device.type == "cuda"
        self.input_size: tuple[int, int] = tuple(weights.input_size)  # (height, width)
        self.num_joints = int(model.num_joints)
        # mmpose's flip_indices: a known skeleton's own left/right pairs (COCO-WholeBody's face, AP-10K's
        # L_/R_ joints), else from the record's joint names (left_x <-> right_x); none: no flip test.
        self.flip_indices: list[int] | None = (skeleton_flip_indices(weights.keypoint_names)
                                               if weights.keypoint_names else None)
        # The same permutation on the device, made once here (indexing with the list would copy it
        # to the device, blocking, on every pass).
        self._flip_index = (torch.tensor(self.flip_indices, dtype=torch.long, device=self.device)
                            if self.flip_indices is not None else None)
        self.weights_sha256: str | None = None  # set by models.load_model
        self._bgr_to_rgb = weights.color == "RGB"
        self._mean = torch.tensor(weights.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(weights.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @property
    def input_size_wh(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[0]

    # -- geometry ---------------------------------------------------------------------------
    def box_to_center_scale(self, bboxes_xywh: Any) -> tuple[np.ndarray, np.ndarray]:
        return box_to_center_scale(bboxes_xywh, self.input_size_wh)

    def warp_matrices(self, centers: np.ndarray, scales: np.ndarray) -> list[np.ndarray]:
        centers = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
        scales = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
        return [get_warp_matrix(c, s, self.input_size_wh) for c, s in zip(centers, scales)]

    def crop_images(self, image_bgr: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """(K, H, W, 3) uint8 crops, still BGR (as ``TopdownAffine`` leaves them), as CPU numpy."""
        return warp_crops_fixed_point(image_bgr, self.warp_matrices(centers, scales), self.input_size_wh)

    def _crops(self, image: np.ndarray | torch.Tensor, centers: np.ndarray, scales: np.ndarray) -> torch.Tensor:
        """The crops on the model's device: cropped where the frame is (a device frame stays there)."""
        matrices = self.warp_matrices(centers, scales)
        if isinstance(image, torch.Tensor):
            if not matrices:
                w, h = self.input_size_wh
                return torch.zeros((0, h, w, 3), dtype=torch.uint8, device=image.device)
            m = torch.from_numpy(np.stack(matrices)).to(image.device)
            fob = torch.zeros(len(matrices), dtype=torch.long, device=image.device)
            return warp.warp_affine_fixed_point(image.unsqueeze(0), fob, m, self.input_size_wh)
        return torch.from_numpy(warp_crops_fixed_point(image, matrices, self.input_size_wh)).to(self.device)

    def normalize(self, crops_bgr: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(K, H, W, 3) uint8 BGR crops -> (K, 3, H, W) float32 network input on the device."""
        x = crops_bgr if isinstance(crops_bgr, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(crops_bgr))
        x = x.to(self.device).permute(0, 3, 1, 2)
        if self._bgr_to_rgb:
            x = x.flip(1)  # BGR -> RGB
        return (x.float() - self._mean) / self._std

    def crop_inputs(self, image_bgr: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """The network input for the crops, as CPU numpy (for checks; the pipeline stays on the device)."""
        return self.normalize(self.crop_images(image_bgr, centers, scales)).cpu().numpy()

    # -- network ----------------------------------------------------------------------------
    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output as one tensor; a family whose network returns several concatenates them."""
        return self.model(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """One pass (fp16 overflow checked on the host: the reference path)."""
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_half_guarded(self, lambda: self._network(x), self.label)

    def _forward_flagged(self, x: torch.Tensor, rows: Sequence[slice]) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass and its fp16 overflow flag over `rows`, as a device tensor (the device path)."""
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_half_flagged(self, lambda: self._network(x), rows)

    def fall_back_to_fp32(self) -> None:
        """After ``predict_frames`` reported an overflow: fp32 from now on (then run that window again)."""
        fall_back_to_fp32(self, self.label)

    def _post(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def _merge_flip(self, raw: torch.Tensor, raw_flipped: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _decode_device(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """Outputs -> keypoints in crop pixels (N, J, 2) (float32, or float64 where mmpose keeps it) and
        scores (N, J) float32, as tensors on the outputs' device."""
        raise NotImplementedError

    def _decode(self, outputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        coords, scores = self._decode_device(outputs)
        return coords.cpu().numpy(), scores.cpu().numpy()

    def _outputs(self, x: torch.Tensor, flip_test: bool) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"inputs must be (N, 3, H, W), got shape {tuple(x.shape)}")
        x = x.to(self.device, dtype=torch.float32)
        if not flip_test:
            return self._post(self._forward(x))
        if self.flip_indices is None:
            raise ValueError(f"{self.weights.name}: the flip test needs the left/right joint pairs of its weights record")
        n = x.shape[0]
        both = self._forward(torch.cat([x, torch.flip(x, dims=[3])]))
        return self._merge_flip(both[:n], both[n:])

    @staticmethod
    def _as_input(inputs: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            return inputs
        return torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))

    @torch.inference_mode()
    def raw_outputs(self, inputs: np.ndarray | torch.Tensor) -> np.ndarray:
        """The network's raw output for a normalised input batch (N, 3, H, W), as CPU numpy."""
        return self._forward(self._as_input(inputs).to(self.device, dtype=torch.float32)).cpu().numpy()

    @torch.inference_mode()
    def outputs(self, inputs: np.ndarray | torch.Tensor, flip_test: bool = False) -> np.ndarray:
        """What is decoded for a normalised input batch: the (flip-averaged) outputs, CPU numpy."""
        return self._outputs(self._as_input(inputs), flip_test).cpu().numpy()

    def decode(self, outputs: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Outputs (as :meth:`outputs` returns them) -> keypoints in crop pixels and scores (K, J)."""
        t = outputs if isinstance(outputs, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(outputs))
        return self._decode(t.to(self.device))

    # -- prediction -------------------------------------------------------------------------
    def predict(self, image_bgr: np.ndarray, bboxes_xywh: np.ndarray, flip_test: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (K, 4) [x, y, w, h] in `image_bgr` -> keypoints (K, J, 2) image px and scores (K, J)."""
        return self.predict_batch([image_bgr], [bboxes_xywh], flip_test=flip_test)[0]

    @torch.inference_mode()
    def predict_batch(
        self,
        images_bgr: Sequence[np.ndarray],
        bboxes_xywh: Sequence[np.ndarray],
        flip_test: bool = True,
        batch_size: int = 32,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`predict` for many images: crops from all of them go through the network together,
        `batch_size` crops per pass (with flip test each pass also holds their mirrored copies).
        One (keypoints, scores) pair per image."""
        if len(images_bgr) != len(bboxes_xywh):
            raise ValueError(f"{len(images_bgr)} images but {len(bboxes_xywh)} box arrays")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        j = self.num_joints
        centers, scales, results = [], [], []
        for image, boxes in zip(images_bgr, bboxes_xywh):
            check_image(image)
            c, s = self.box_to_center_scale(boxes)
            centers.append(c)
            scales.append(s)
            results.append((np.zeros((len(c), j, 2), np.float32), np.zeros((len(c), j), np.float32)))
        jobs = [(i, b) for i, c in enumerate(centers) for b in range(len(c))]  # every crop, in order
        # On a GPU each frame goes to the device once, however many of its boxes are cropped there.
        on_device = self.device.type != "cpu"
        frames = {i: torch.from_numpy(np.ascontiguousarray(images_bgr[i])).to(self.device) if on_device
                  else images_bgr[i] for i, _ in jobs}
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            c = np.stack([centers[i][b] for i, b in chunk])
            s = np.stack([scales[i][b] for i, b in chunk])
            crops = torch.cat([
                self._crops(frames[i], centers[i][boxes], scales[i][boxes])
                for i, boxes in _by_image(chunk)
            ])
            coords, scores = self._decode(self._outputs(self.normalize(crops), flip_test))
            kps = crop_to_image(coords, c, s, self.input_size_wh)
            for row, (i, b) in enumerate(chunk):
                results[i][0][b] = kps[row]
                results[i][1][b] = scores[row]
        return results

    def device_warp_matrices(self, center: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(N, 2, 3) float64 image->crop matrices of the device path: the tensor twin of `warp_matrices`
        (a family with its own crop geometry, e.g. ViTPose's UDP, overrides both)."""
        return ondevice.mmpose_warp_matrices(center, scale, self.input_size_wh)

    @torch.inference_mode()
    def predict_frames(
        self,
        frames: torch.Tensor,
        frame_of_box: torch.Tensor,
        boxes_xywh: torch.Tensor,
        *,
        flip_test: bool = True,
        bucket: int = ondevice.BUCKET,
        batch_size: int = 64,
    ) -> ondevice.PoseFrames:
        """`predict_batch` on the device, with no host sync.

        frames: (B, H, W, 3) uint8 BGR on the model's device; frame_of_box: (N,) int64, the frame of each
        box; boxes_xywh: (N, 4) float [x, y, w, h] image pixels (read as float32, as mmpose does). Returns
        :class:`~posepipe.models.ondevice.PoseFrames`: keypoints (N, J, 2) float32 image px, scores (N, J)
        float32, overflow () bool (fp16 inf/NaN: call :meth:`fall_back_to_fp32` and run again). N is
        padded up to a multiple of `bucket` (dummy boxes, sliced off) and run `batch_size` crops (rounded
        to the bucket) per pass, each pass holding their mirrors too with `flip_test`.
        Same numbers as `predict_batch` on the same device: the crops are byte-identical
        (:func:`~posepipe.models.ondevice.warp_affine_fixed_point`), the rest is the same arithmetic.
        """
        ondevice.check_inputs(frames, frame_of_box, boxes_xywh, self.device, self.weights.name)
        if flip_test and self._flip_index is None:
            raise ValueError(f"{self.weights.name}: the flip test needs the left/right joint pairs of its weights record")
        n, j = boxes_xywh.shape[0], self.num_joints
        if n == 0:
            empty = torch.zeros((0, j), dtype=torch.float32, device=self.device)
            return ondevice.PoseFrames(empty.unsqueeze(-1).expand(0, j, 2).contiguous(), empty,
                                       torch.zeros((), dtype=torch.bool, device=self.device))
        total = ondevice.padded_count(n, bucket)
        step = max(bucket, batch_size // bucket * bucket)
        fob, boxes = ondevice.pad_boxes(frame_of_box, boxes_xywh, total, (0.0, 0.0, 1.0, 1.0))
        center, scale = ondevice.mmpose_center_scale(boxes, self.input_size_wh, BOX_PADDING)
        matrices = self.device_warp_matrices(center, scale)
        keypoints, scores, flags = [], [], []
        for start in range(0, total, step):
            stop = min(start + step, total)
            crops = ondevice.warp_affine_fixed_point(frames, fob[start:stop], matrices[start:stop], self.input_size_wh)
            outputs, overflow = self._outputs_flagged(self.normalize(crops), flip_test, real=max(0, min(n, stop) - start))
            coords, sc = self._decode_device(outputs)
            keypoints.append(ondevice.crop_to_image(coords, center[start:stop], scale[start:stop], self.input_size_wh))
            scores.append(sc.to(torch.float32))
            flags.append(overflow)
        return ondevice.PoseFrames(torch.cat(keypoints)[:n], torch.cat(scores)[:n], torch.stack(flags).any())

    def _outputs_flagged(self, x: torch.Tensor, flip_test: bool, real: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`_outputs` for the device path: the fp16 check is a flag over the first `real` crops (and their mirrors)."""
        m = x.shape[0]
        if not flip_test:
            raw, overflow = self._forward_flagged(x, [slice(0, real)])
            return self._post(raw), overflow
        both, overflow = self._forward_flagged(torch.cat([x, torch.flip(x, dims=[3])]),
                                               [slice(0, real), slice(m, m + real)])
        return self._merge_flip(both[:m], both[m:]), overflow


def _by_image(chunk: Sequence[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """Consecutive (image, box) pairs grouped by image, in order: [(image, [boxes...]), ...]."""
    groups: list[tuple[int, list[int]]] = []
    for i, b in chunk:
        if groups and groups[-1][0] == i:
            groups[-1][1].append(b)
        else:
            groups.append((i, [b]))
    return groups


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """eval(), on `device`; channels_last on CUDA (as the other image models run there)."""
    model = model.eval().to(device)
    if torch.device(device).type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


__all__ = [
    "BOX_PADDING", "TopdownPredictor", "as_boxes_xywh", "bbox_center_scale", "box_to_center_scale", "check_image",
    "crop_to_image", "fix_aspect_ratio", "get_warp_matrix", "place", "warp_crops_fixed_point",
]
