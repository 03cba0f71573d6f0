"""SMPL's body model in plain torch: its model file, linear blend skinning, and the joints SMPLify fits.

Loper, Mahmood, Romero, Pons-Moll, Black, "SMPL: A Skinned Multi-Person Linear Model", SIGGRAPH Asia
2015. The model file is the user's (SMPL's licence forbids redistribution): a pickle holding
``v_template`` (V, 3), ``shapedirs`` (V, 3, >=10), ``posedirs`` (V, 3, 207), ``J_regressor`` (24, V; dense
or scipy sparse), ``weights`` (V, 24), ``kintree_table`` (2, 24) and ``f`` (F, 3). The pickle is read by
an unpickler that builds numpy arrays and scipy sparse matrices only: a model file cannot run code.

The skinning follows smplx (``smplx/lbs.py``, the implementation SPIN runs), so that fits agree with
SPIN's: shape blend shapes, rest joints from the shaped mesh, Rodrigues with smplx's 1e-8 shift of the
rotation vector (it keeps the gradient finite at a zero rotation), pose blend shapes from R - I of the
23 body joints, the rigid chain down the kinematic tree, then the skinning.

Besides SMPL's 24 joints, SPIN's joint set uses 21 mesh vertices (nose, eyes, ears, feet, finger tips,
at the vertex ids smplx's ``vertex_ids['smplh']`` names for SMPL's topology) and optionally 9 joints of
an extra regressor (SPIN's ``J_regressor_extra.npy``). ``SMPL.joints`` computes all of them from the
few vertices they need, without skinning the whole mesh, which is what makes fitting cheap.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_JOINTS = 24
NUM_BODY_JOINTS = 23
NUM_BETAS = 10
POSE_BASIS = NUM_BODY_JOINTS * 9   # 207 pose blend shapes: R - I of the 23 body joints

# SMPL vertices smplx selects as joints (its vertex_ids['smplh'], SMPL's topology), in smplx's order:
# face, feet, then finger tips of the left and the right hand. They follow SMPL's 24 joints.
VERTEX_JOINTS: tuple[tuple[str, int], ...] = (
    ("nose", 332), ("right_eye", 6260), ("left_eye", 2800), ("right_ear", 4071), ("left_ear", 583),
    ("left_big_toe", 3216), ("left_small_toe", 3226), ("left_heel", 3387),
    ("right_big_toe", 6617), ("right_small_toe", 6624), ("right_heel", 6787),
    ("left_thumb", 2746), ("left_index", 2319), ("left_middle", 2445), ("left_ring", 2556), ("left_pinky", 2673),
    ("right_thumb", 6191), ("right_index", 5782), ("right_middle", 5905), ("right_ring", 6016), ("right_pinky", 6133),
)
# SPIN's J_regressor_extra.npy rows, in order; joints 45..53 of SMPL.joints when one is given.
EXTRA_JOINTS: tuple[str, ...] = ("right_hip_lsp", "left_hip_lsp", "neck_lsp", "head_top_lsp", "pelvis_mpii",
                                 "thorax_mpii", "spine_h36m", "jaw_h36m", "head_h36m")
# Without the extra regressor those joints are SMPL joints that stand nearest in meaning (pelvis 0,
# hips 2/1, neck 12, spine 6, head 15): only the hips can matter to a fit from COCO keypoints (SMPLify's
# camera step falls back to them), the rest are never given keypoints.
EXTRA_STAND_INS: tuple[int, ...] = (2, 1, 12, 15, 0, 12, 6, 15, 15)
NUM_EXTENDED_JOINTS = NUM_JOINTS + len(VERTEX_JOINTS) + len(EXTRA_JOINTS)  # 54


class SMPLModelError(ValueError):
    """A model file that cannot be used: the message says what is wrong and what to do."""


# ---------------------------------------------------------------------------------------------
# The model file
# ---------------------------------------------------------------------------------------------

# What a model file may name: numpy arrays and scalars (pickled by Python 2 or 3, numpy 1 or 2) and
# scipy's sparse matrices (SMPL's J_regressor is a csc_matrix), nothing that could run code.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"),
    ("builtins", "object"), ("__builtin__", "object"),
    ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3 (a numpy array's data)
}
_SPARSE_MODULES = ("scipy.sparse",)
_SPARSE_NAMES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, data: bytes, what: str):
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.what = what

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy":
            raise SMPLModelError(
                f"{self.what} holds chumpy objects (the file as first published for Python 2); convert it to "
                "plain numpy arrays once, e.g. with smplx's tools/clean_ch.py, and pass the converted file")
        if (module, name) in _ALLOWED_GLOBALS or (module.startswith(_SPARSE_MODULES) and name in _SPARSE_NAMES):
            return super().find_class(module, name)
        raise SMPLModelError(f"{self.what} names {module}.{name}, which a model file of numpy arrays never does; "
                             "refusing to load it (pass the .pkl of SMPL's layout)")


def read_pickled_arrays(path: str | Path, what: str) -> tuple[dict, str]:
    """A pickled dict of arrays (SMPL's model file, SMPLify's GMM prior) and the file's sha256."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SMPLModelError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    label = f"the {what} {path}"
    try:
        obj = _ArraysOnly(data, label).load()
    except SMPLModelError:
        raise
    except Exception as exc:  # a truncated or foreign file: say which and what it should be
        raise SMPLModelError(f"{label} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise SMPLModelError(f"{label} holds a {type(obj).__name__}, not the dict of arrays it should")
    return obj, hashlib.sha256(data).hexdigest()


def _dense(value) -> np.ndarray:
    return np.asarray(value.toarray() if hasattr(value, "toarray") else value, dtype=np.float64)


@dataclass(frozen=True)
class SMPLModelData:
    """The arrays of one SMPL model file, checked, in float64."""

    v_template: np.ndarray   # (V, 3)
    shapedirs: np.ndarray    # (V, 3, 10)
    posedirs: np.ndarray     # (V, 3, 207)
    j_regressor: np.ndarray  # (24, V)
    weights: np.ndarray      # (V, 24)
    parents: tuple[int, ...]  # 24, -1 for the root
    faces: np.ndarray        # (F, 3) int64
    sha256: str = ""

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])


def smpl_model_from_dict(model: dict, *, what: str = "SMPL model", sha256: str = "") -> SMPLModelData:
    """Check a model dict (SMPL's pickle layout) and take its arrays; shapedirs beyond 10 betas are cut."""
    missing = [k for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
               if k not in model]
    if missing:
        raise SMPLModelError(f"the {what} lacks {missing}: it is not an SMPL model file (SMPL_NEUTRAL.pkl or "
                             "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl has them)")
    v_template = _dense(model["v_template"])
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise SMPLModelError(f"the {what}'s v_template has shape {v_template.shape}, not (V, 3)")
    v = v_template.shape[0]
    need = max(i for _, i in VERTEX_JOINTS) + 1
    if v < need:
        raise SMPLModelError(f"the {what} has {v} vertices; SMPL has 6890 and SMPLify's joints need at least {need}")
    expect = {"shapedirs": (v, 3, None), "posedirs": (v, 3, POSE_BASIS), "J_regressor": (NUM_JOINTS, v),
              "weights": (v, NUM_JOINTS), "kintree_table": (2, NUM_JOINTS)}
    arrays = {}
    for key, shape in expect.items():
        a = _dense(model[key])
        if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
            want = "(" + ", ".join("K" if s is None else str(s) for s in shape) + ")"
            raise SMPLModelError(f"the {what}'s {key} has shape {a.shape}, not {want}: is this an SMPL (not SMPL-H, "
                                 "SMPL-X or STAR) model file?")
        arrays[key] = a
    if arrays["shapedirs"].shape[2] < NUM_BETAS:
        raise SMPLModelError(f"the {what} has {arrays['shapedirs'].shape[2]} shape components; SMPL has at least 10")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        a = v_template if key == "v_template" else arrays[key]
        if not np.isfinite(a).all():
            raise SMPLModelError(f"the {what}'s {key} holds non-finite values")
    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    if any(not 0 <= p < j for j, p in enumerate(parents[1:], start=1)):
        raise SMPLModelError(f"the {what}'s kintree_table does not list each joint after its parent: {parents.tolist()}")
    faces = np.asarray(model["f"]).astype(np.int64)
    return SMPLModelData(v_template=v_template, shapedirs=arrays["shapedirs"][:, :, :NUM_BETAS].copy(),
                         posedirs=arrays["posedirs"], j_regressor=arrays["J_regressor"], weights=arrays["weights"],
                         parents=tuple(int(p) for p in parents), faces=faces, sha256=sha256)


def read_smpl_model(path: str | Path) -> SMPLModelData:
    """SMPL's model file (.pkl), checked; its sha256 rides along for provenance."""
    model, digest = read_pickled_arrays(path, "SMPL model")
    return smpl_model_from_dict(model, what=f"SMPL model {path}", sha256=digest)


def read_extra_regressor(path: str | Path, num_vertices: int) -> np.ndarray:
    """SPIN's J_regressor_extra.npy: (9, V) weights of the LSP/MPII/H36M joints SMPL lacks."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SMPLModelError(f"cannot read the extra joint regressor {path}: {exc}") from None
    if a.shape != (len(EXTRA_JOINTS), num_vertices) or not np.isfinite(a).all():
        raise SMPLModelError(f"the extra joint regressor {path} has shape {a.shape}; SPIN's J_regressor_extra.npy "
                             f"is ({len(EXTRA_JOINTS)}, {num_vertices}) of finite weights")
    return a.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Skinning
# ---------------------------------------------------------------------------------------------


def batch_rodrigues(rot_vecs: torch.Tensor) -> torch.Tensor:
    """(N, 3) axis-angle -> (N, 3, 3), as smplx computes it (the 1e-8 shift included)."""
    angle = torch.norm(rot_vecs + 1e-8, dim=1, keepdim=True)
    axis = rot_vecs / angle
    cos, sin = torch.cos(angle).unsqueeze(1), torch.sin(angle).unsqueeze(1)
    rx, ry, rz = axis.split(1, dim=1)
    zeros = torch.zeros_like(rx)
    k = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device).unsqueeze(0)
    return eye + sin * k + (1 - cos) * torch.bmm(k, k)


def _levels(parents: tuple[int, ...]) -> list[list[int]]:
    """Joints grouped by depth in the tree (root first), so each depth is one batched product."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]


def rigid_chain(rot_mats: torch.Tensor, joints: torch.Tensor, parents: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed joints (B, J, 3) and the skinning transforms (B, J, 4, 4) relative to the rest pose."""
    rel = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, list(parents[1:])]], dim=1)
    local = torch.cat([F.pad(rot_mats, [0, 0, 0, 1]), F.pad(rel.unsqueeze(-1), [0, 0, 0, 1], value=1.0)], dim=-1)
    levels = _levels(parents)
    done, order = [local[:, levels[0]]], list(levels[0])
    for level in levels[1:]:
        so_far = torch.cat(done, dim=1) if len(done) > 1 else done[0]
        slot = [order.index(parents[j]) for j in level]
        done.append(torch.matmul(so_far[:, slot], local[:, level]))
        order += level
    world = torch.cat(done, dim=1)[:, [order.index(j) for j in range(len(parents))]]
    posed = world[:, :, :3, 3]
    rest = torch.matmul(world, F.pad(joints.unsqueeze(-1), [0, 0, 0, 1]))
    return posed, world - F.pad(rest, [3, 0, 0, 0, 0, 0, 0, 0])


def _skin(transforms: torch.Tensor, v_posed: torch.Tensor) -> torch.Tensor:
    """Per-vertex 4x4 transforms (B, V, 4, 4) applied to posed vertices (B, V, 3), homogeneous as smplx does."""
    homo = F.pad(v_posed, [0, 1], value=1.0).unsqueeze(-1)
    return torch.matmul(transforms, homo)[..., :3, 0]


class SMPLOutput(NamedTuple):
    vertices: torch.Tensor  # (B, V, 3)
    joints: torch.Tensor    # (B, 54, 3): SMPL's 24, the 21 vertex joints, the 9 extra ones


class SMPL(nn.Module):
    """SMPL's forward in plain torch, float32 by default; the 54 joints SPIN's SMPLify selects from."""

    def __init__(self, model: SMPLModelData, *, extra_regressor: np.ndarray | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.parents = model.parents
        self.sha256 = model.sha256
        self.has_extra_regressor = extra_regressor is not None
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
        # The model's arrays go to float32 first, as smplx stores them, and every product is taken from those.
        self.register_buffer("v_template", t(model.v_template))
        self.register_buffer("shapedirs", t(model.shapedirs))
        self.register_buffer("posedirs", t(model.posedirs.reshape(-1, POSE_BASIS).T))   # (207, V*3)
        self.register_buffer("j_regressor", t(model.j_regressor))
        self.register_buffer("lbs_weights", t(model.weights))
        self.register_buffer("faces", torch.as_tensor(model.faces))
        extra = (np.zeros((len(EXTRA_JOINTS), model.num_vertices)) if extra_regressor is None
                 else np.asarray(extra_regressor, dtype=np.float64))
        self.register_buffer("extra_regressor", t(extra))
        # For SMPL.joints: the vertices any joint reads, and the rest joints' shape dependence
        # (J_regressor is linear, so J(betas) = J_regressor @ v_template + (J_regressor @ shapedirs) betas).
        vertex_ids = np.array([i for _, i in VERTEX_JOINTS])
        support = np.union1d(vertex_ids, np.flatnonzero(np.abs(extra).sum(axis=0)))
        self.register_buffer("support", torch.as_tensor(support, dtype=torch.long))
        self.register_buffer("support_vertex_joints", torch.as_tensor(np.searchsorted(support, vertex_ids)))
        self.register_buffer("support_extra", t(extra[:, support]))
        self.register_buffer("support_template", t(model.v_template[support]))
        self.register_buffer("support_shapedirs", t(model.shapedirs[support]))
        self.register_buffer("support_posedirs", t(model.posedirs[support].reshape(-1, POSE_BASIS).T))
        self.register_buffer("support_weights", t(model.weights[support]))
        v32 = model.v_template.astype(np.float32).astype(np.float64)
        s32 = model.shapedirs.astype(np.float32).astype(np.float64)
        r32 = model.j_regressor.astype(np.float32).astype(np.float64)
        self.register_buffer("joint_template", t(r32 @ v32))
        self.register_buffer("joint_shapedirs", t(np.einsum("jv,vkl->jkl", r32, s32)))

    def _pose(self, global_orient: torch.Tensor, body_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = torch.cat([global_orient, body_pose], dim=1)
        b = full.shape[0]
        rot = batch_rodrigues(full.reshape(-1, 3)).view(b, NUM_JOINTS, 3, 3)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        return rot, (rot[:, 1:] - eye).reshape(b, -1)

    def forward(self, global_orient: torch.Tensor, body_pose: torch.Tensor, betas: torch.Tensor) -> SMPLOutput:
        """The whole mesh and the 54 joints; (B, 3), (B, 69), (B, 10) axis-angle and betas."""
        b = global_orient.shape[0]
        v_shaped = self.v_template + torch.einsum("bl,mkl->bmk", betas, self.shapedirs)
        rest_joints = torch.einsum("bik,ji->bjk", v_shaped, self.j_regressor)
        rot, pose_feature = self._pose(global_orient, body_pose)
        v_posed = v_shaped + torch.matmul(pose_feature, self.posedirs).view(b, -1, 3)
        joints, transforms = rigid_chain(rot, rest_joints, self.parents)
        t = torch.matmul(self.lbs_weights, transforms.view(b, NUM_JOINTS, 16)).view(b, -1, 4, 4)
        vertices = _skin(t, v_posed)
        return SMPLOutput(vertices, torch.cat([joints, self._mesh_joints(vertices, vertices, joints)], dim=1))

    def _mesh_joints(self, vertex_rows: torch.Tensor, all_vertices: torch.Tensor | None,
                     joints: torch.Tensor) -> torch.Tensor:
        if all_vertices is not None:
            picked = all_vertices[:, [i for _, i in VERTEX_JOINTS]]
            extra = torch.einsum("bik,ji->bjk", all_vertices, self.extra_regressor)
        else:
            picked = vertex_rows[:, self.support_vertex_joints]
            extra = torch.einsum("bik,ji->bjk", vertex_rows, self.support_extra)
        if not self.has_extra_regressor:
            extra = joints[:, list(EXTRA_STAND_INS)]
        return torch.cat([picked, extra], dim=1)

    def joints(self, global_orient: torch.Tensor, body_pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """The 54 joints alone (B, 54, 3): the same numbers as ``forward``'s, skinning only the vertices
        the joints read (21 + the extra regressor's), so a fit's step costs a small part of a mesh's."""
        b = global_orient.shape[0]
        rest_joints = self.joint_template + torch.einsum("bl,jkl->bjk", betas, self.joint_shapedirs)
        rot, pose_feature = self._pose(global_orient, body_pose)
        v_shaped = self.support_template + torch.einsum("bl,mkl->bmk", betas, self.support_shapedirs)
        v_posed = v_shaped + torch.matmul(pose_feature, self.support_posedirs).view(b, -1, 3)
        joints, transforms = rigid_chain(rot, rest_joints, self.parents)
        t = torch.matmul(self.support_weights, transforms.view(b, NUM_JOINTS, 16)).view(b, -1, 4, 4)
        rows = _skin(t, v_posed)
        return torch.cat([joints, self._mesh_joints(rows, None, joints)], dim=1)


def load_smpl(path: str | Path, *, extra_regressor: str | Path | None = None,
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SMPL:
    """SMPL from the user's model file (and optionally SPIN's extra joint regressor), on `device`."""
    data = read_smpl_model(path)
    extra = None if extra_regressor is None else read_extra_regressor(extra_regressor, data.num_vertices)
    return SMPL(data, extra_regressor=extra, dtype=dtype).to(device)
