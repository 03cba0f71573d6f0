"""What mmaction2 needs to train on posepipe's H36M-17 3D skeletons, written beside the pickle.

mmaction2's 3D skeleton configs are NTU RGB+D's (25 joints). For H36M-17 they need:

* a graph layout: ``dict(num_node=17, inward=[(child, parent), ...], center=0)``, which
  ``Graph`` accepts as a dict (`H36M17_LAYOUT`);
* ``PreNormalize3D``'s axes as H36M joint indices: ``zaxis=[0, 7]`` (pelvis -> spine) and
  ``xaxis=[14, 11]`` (right -> left shoulder); its defaults ``[0, 1]`` and ``[8, 4]`` are NTU's.
  PreNormalize3D centres a skeleton that is not 25 joints on its *last* joint in the first frame
  (H36M's right wrist): a translation, harmless. It treats a joint at exactly (0, 0, 0) as
  missing, which is why the export never writes the pelvis at the origin (`pipeline.downstream.export`);
* bone pairs (`H36M17_BONE_PAIRS`, (joint, parent), the root paired with itself as mmaction2's
  own lists do). mmaction2's ``JointToBone`` only knows its three built-in lists, so the bone
  stream needs the small transform in `TRANSFORM_MODULE` (``H36MJointToBone``), loaded through
  mmengine's ``custom_imports``.

`config_text` writes a ready ST-GCN config: mmaction2's shipped 3D joint config written out whole,
with the layout, axes, class count, pickle and splits replaced. ``tests/pipeline/downstream/test_mmaction.py``
trains it one step with mmaction2 1.2.0.
"""
from __future__ import annotations

from posepipe.models.skeletons import H36M17_NAMES, H36M17_PARENTS

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
Written by posepipe (pipeline/downstream/mmaction.py).
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


def config_text(pickle_name: str, num_classes: int, splits: list[str], config_name: str | None = None) -> str:
    """A ready mmaction2 ST-GCN config (joint stream) for an H36M-17 3D export (see the module).

    It is mmaction2's own 3D ST-GCN config written out whole (only its runtime defaults are
    inherited), with the H36M-17 layout and axes, the class count, the pickle and its splits: no
    ``_delete_`` merging to get wrong. Names appear as Python string literals (and, in comments,
    with every non-ASCII or control character escaped): a file name holding a quote or a newline
    cannot break the config or put code in it."""
    config_name = config_name or pickle_name.rsplit(".", 1)[0] + ".mmaction2.py"
    shown, shown_config = ascii(pickle_name)[1:-1], ascii(config_name)[1:-1]
    train = "train" if "train" in splits else splits[0]
    val = next((s for s in ("val", "test") if s in splits), train)
    test = "test" if "test" in splits else val
    return f'''# mmaction2 (1.x) ST-GCN config for posepipe's H36M-17 3D skeletons in {shown}: mmaction2's
# {BASE_CONFIG.split("/")[-1]} with H36M-17's graph, PreNormalize3D axes and bone pairs.
# Written by `posepipe export posec3d --kind 3d` (pipeline/downstream/mmaction.py). From this folder:
#   python tools/train.py {shown_config}     (tools/ of an mmaction2 checkout)
# Bone stream: put this folder on PYTHONPATH, add
#   custom_imports = dict(imports=['{TRANSFORM_MODULE_NAME}'], allow_failed_imports=False)
# and replace dict(type='GenSkeFeat', dataset='nturgb+d', feats=['j']) in the pipelines with
#   dict(type='H36MJointToBone', target='b'), dict(type='MergeSkeFeat', feat_list=['b'])
_base_ = 'mmaction::_base_/default_runtime.py'

ann_file = {pickle_name!r}
num_classes = {num_classes}
h36m17_layout = {H36M17_LAYOUT!r}
h36m17_bone_pairs = {H36M17_BONE_PAIRS!r}
# H36M joint indices for PreNormalize3D: pelvis -> spine is z, right -> left shoulder is x.
pre_normalize_3d = {PRE_NORMALIZE_3D!r}

model = dict(
    type='RecognizerGCN',
    backbone=dict(type='STGCN', graph_cfg=dict(layout=h36m17_layout, mode='stgcn_spatial')),
    cls_head=dict(type='GCNHead', num_classes=num_classes, in_channels=256))

dataset_type = 'PoseDataset'
train_pipeline = {_pipeline("train")}
val_pipeline = {_pipeline("val")}
test_pipeline = {_pipeline("test")}

train_dataloader = dict(
    batch_size=16, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='RepeatDataset', times=5,
                 dataset=dict(type=dataset_type, ann_file=ann_file, pipeline=train_pipeline, split={train!r})))
val_dataloader = dict(
    batch_size=16, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, ann_file=ann_file, pipeline=val_pipeline, split={val!r}, test_mode=True))
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, ann_file=ann_file, pipeline=test_pipeline, split={test!r}, test_mode=True))

val_evaluator = [dict(type='AccMetric')]
test_evaluator = val_evaluator
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=16, val_begin=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [dict(type='CosineAnnealingLR', eta_min=0, T_max=16, by_epoch=True, convert_to_iter_based=True)]
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0005, nesterov=True))
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=100))
auto_scale_lr = dict(enable=False, base_batch_size=128)
'''
