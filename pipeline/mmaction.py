"""What mmaction2 needs to train on posepipe's H36M-17 3D skeletons, written beside the pickle.

mmaction2's 3D skeleton configs are NTU RGB+D's (25 joints). For H36M-17 they need:

* a graph layout: ``dict(num_node=17, inward=[(child, parent), ...], center=0)``, which
  ``Graph`` accepts as a dict (`H36M17_LAYOUT`);
* ``PreNormalize3D``'s axes as H36M joint indices: ``zaxis=[0, 7]`` (pelvis -> spine) and
  ``xaxis=[14, 11]`` (right -> left shoulder); its defaults ``[0, 1]`` and ``[8, 4]`` are NTU's.
  PreNormalize3D centres a skeleton that is not 25 joints on its *last* joint in the first frame
  (H36M's right wrist): a translation, harmless. It treats a joint at exactly (0, 0, 0) as
  missing, which is why the export never writes the pelvis at the origin (`pipeline.export`);
* bone pairs (`H36M17_BONE_PAIRS`, (joint, parent), the root paired with itself as mmaction2's
  own lists do). mmaction2's ``JointToBone`` only knows its three built-in lists, so the bone
  stream needs the small transform in `TRANSFORM_MODULE` (``H36MJointToBone``), loaded through
  mmengine's ``custom_imports``.

`config_text` writes a ready ST-GCN config: mmaction2's shipped 3D joint config as its base, with
the layout, axes, class count, pickle and splits replaced. ``tests/pipeline/test_mmaction.py``
trains it one step with mmaction2 1.2.0.
"""
from __future__ import annotations

from models.skeletons import H36M17_NAMES, H36M17_PARENTS

H36M17_BONE_PAIRS: tuple[tuple[int, int], ...] = tuple((j, max(p, 0)) for j, p in enumerate(H36M17_PARENTS))
H36M17_LAYOUT = {"num_node": len(H36M17_NAMES), "inward": [(j, p) for j, p in enumerate(H36M17_PARENTS) if p >= 0],
                 "center": 0}
PRE_NORMALIZE_3D = {"type": "PreNormalize3D", "zaxis": [H36M17_NAMES.index("pelvis"), H36M17_NAMES.index("spine")],
                    "xaxis": [H36M17_NAMES.index("right_shoulder"), H36M17_NAMES.index("left_shoulder")]}
BASE_CONFIG = "mmaction::skeleton/stgcn/stgcn_8xb16-joint-u100-80e_ntu60-xsub-keypoint-3d.py"
TRANSFORM_MODULE_NAME = "posepipe_h36m"

TRANSFORM_MODULE = f'''"""posepipe's H36M-17 bones for mmaction2: ``JointToBone`` with H36M-17's (joint, parent) pairs.

Load it with ``custom_imports = dict(imports=['{TRANSFORM_MODULE_NAME}'])`` (this folder on PYTHONPATH), then
use ``dict(type='H36MJointToBone', target='b')`` and ``dict(type='MergeSkeFeat', feat_list=['b'])`` where
the NTU configs say ``dict(type='GenSkeFeat', dataset='nturgb+d', feats=['b'])``.
Written by posepipe (pipeline/mmaction.py).
"""
from mmaction.datasets.transforms import JointToBone
from mmaction.registry import TRANSFORMS

H36M17_BONE_PAIRS = {H36M17_BONE_PAIRS!r}


@TRANSFORMS.register_module()
class H36MJointToBone(JointToBone):
    def __init__(self, target: str = 'keypoint') -> None:
        super().__init__(dataset='nturgb+d', target=target)
        self.dataset = 'h36m17'
        self.pairs = H36M17_BONE_PAIRS
'''


def _pipeline(mode: str) -> str:
    sample = {"train": "dict(type='UniformSampleFrames', clip_len=100)",
              "val": "dict(type='UniformSampleFrames', clip_len=100, num_clips=1, test_mode=True)",
              "test": "dict(type='UniformSampleFrames', clip_len=100, num_clips=10, test_mode=True)"}[mode]
    return (f"[\n    pre_normalize_3d,\n    dict(type='GenSkeFeat', dataset='nturgb+d', feats=['j']),\n    {sample},\n"
            "    dict(type='PoseDecode'),\n    dict(type='FormatGCNInput', num_person=2),\n    dict(type='PackActionInputs'),\n]")


def config_text(pickle_name: str, num_classes: int, splits: list[str]) -> str:
    """A ready mmaction2 ST-GCN config (joint stream) for an H36M-17 3D export (see the module)."""
    train = "train" if "train" in splits else splits[0]
    val = next((s for s in ("val", "test") if s in splits), train)
    test = "test" if "test" in splits else val
    return f'''# mmaction2 (1.x) ST-GCN config for posepipe's H36M-17 3D skeletons in {pickle_name}.
# Written by `posepipe export posec3d --kind 3d` (pipeline/mmaction.py). Train with
#   python tools/train.py {pickle_name.rsplit(".", 1)[0]}.mmaction2.py     (from this folder, or fix ann_file)
# Bone stream: put this folder on PYTHONPATH, add
#   custom_imports = dict(imports=['{TRANSFORM_MODULE_NAME}'], allow_failed_imports=False)
# and replace GenSkeFeat(feats=['j']) in the pipelines with
#   dict(type='H36MJointToBone', target='b'), dict(type='MergeSkeFeat', feat_list=['b'])
_base_ = '{BASE_CONFIG}'

ann_file = '{pickle_name}'
num_classes = {num_classes}
h36m17_layout = {H36M17_LAYOUT!r}
h36m17_bone_pairs = {H36M17_BONE_PAIRS!r}
# H36M joint indices for PreNormalize3D: pelvis -> spine is z, right -> left shoulder is x.
pre_normalize_3d = {PRE_NORMALIZE_3D!r}

model = dict(
    backbone=dict(graph_cfg=dict(layout=h36m17_layout, mode='stgcn_spatial')),
    cls_head=dict(num_classes=num_classes))

train_pipeline = {_pipeline("train")}
val_pipeline = {_pipeline("val")}
test_pipeline = {_pipeline("test")}

train_dataloader = dict(dataset=dict(dataset=dict(ann_file=ann_file, pipeline=train_pipeline, split={train!r})))
val_dataloader = dict(dataset=dict(ann_file=ann_file, pipeline=val_pipeline, split={val!r}))
test_dataloader = dict(dataset=dict(ann_file=ann_file, pipeline=test_pipeline, split={test!r}))
'''
