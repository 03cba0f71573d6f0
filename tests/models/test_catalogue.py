"""The catalogue as a whole: every record's stage, cost and family; one interface per stage, so the
worker calls every family alike; jobs choose any family of a stage and nothing else."""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from posepipe.models import CATALOGUE, FAMILIES, STAGES
from posepipe.pipeline.options import DEFAULT_MODELS, JobOptions, OptionError

META = torch.device("meta")
BY_STAGE = {stage: sorted(n for n, s in CATALOGUE.items() if s.stage == stage) for stage in STAGES}


def _on_meta(name: str):
    """The predictor with its network on the meta device: shapes without weights or compute."""
    spec = CATALOGUE[name]
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return FAMILIES[spec.family].create(spec, None, device=META)


def test_every_stage_has_models_and_every_record_a_known_stage_and_family():
    assert set(BY_STAGE["pose"]) >= {"hrnet_w32_coco_256x192", "rtmpose_m_coco_256x192",
                                     "simplebaseline_res50_coco_256x192", "rle_res50_coco_256x192",
                                     "hourglass52_coco_256x256", "vitpose_b_coco_256x192"}
    assert BY_STAGE["lifter"] == ["motionbert_dstformer_243_h36m", "motionbert_dstformer_ft_243_h36m",
                                  "simplebaseline3d_h36m", "videopose3d_243_coco"]
    for name, spec in CATALOGUE.items():
        assert spec.stage in STAGES and spec.family in FAMILIES, name
        family = FAMILIES[spec.family]
        assert family.WEIGHTS[name] is spec
        for attr in ("checkpoint_format", "convert_checkpoint", "create"):
            assert callable(getattr(family, attr)), (spec.family, attr)
    for stage, name in DEFAULT_MODELS.items():
        assert CATALOGUE[name].stage == stage


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_recorded_cost_is_what_the_network_computes(name):
    """`gmacs` (what `posepipe weights list` shows) is counted, not copied: one crop / image / lifted frame."""
    spec = CATALOGUE[name]
    predictor = _on_meta(name)
    if spec.family == "videopose3d":
        frames = 1000
        x = torch.zeros((1, frames + predictor.receptive_field - 1, 17, 2), device=META)
    elif spec.family == "motionbert":  # one frame of a whole clip (its temporal attention included)
        frames = predictor.receptive_field
        x = torch.zeros((1, frames, 17, 3), device=META)
    elif spec.stage == "lifter":
        frames, x = 1, torch.zeros((1, 34, 1), device=META)
    else:
        frames, x = 1, torch.zeros((1, 3, *spec.input_size), device=META)
    with FlopCounterMode(display=False) as counter:
        predictor.model(x)
    counted = counter.get_total_flops() / 2 / 1e9 / frames
    assert spec.gmacs == pytest.approx(counted, rel=0.01), f"{name}: counted {counted:.4g} GMACs"


@pytest.mark.parametrize("name", BY_STAGE["pose"])
def test_every_2d_family_has_the_same_interface(name):
    predictor = _on_meta(name)
    params = inspect.signature(predictor.predict_batch).parameters
    assert list(params)[:3] == ["images_bgr", "bboxes_xywh", "flip_test"]
    assert "flip_test" in inspect.signature(predictor.predict).parameters
    assert predictor.weights is CATALOGUE[name] and predictor.weights_sha256 is None
    assert tuple(predictor.input_size) == CATALOGUE[name].input_size


@pytest.mark.parametrize("name", BY_STAGE["lifter"])
def test_every_lifter_has_the_same_interface(name):
    lifter = _on_meta(name)
    assert list(inspect.signature(lifter.lift_batch).parameters)[:4] == ["sequences", "width", "height", "flip_augment"]
    assert list(inspect.signature(lifter.lift).parameters)[:4] == ["keypoints_px", "width", "height", "flip_augment"]
    assert isinstance(lifter.receptive_field, int) and lifter.receptive_field >= 1
    assert lifter.pad == (lifter.receptive_field - 1) // 2
    assert {"simplebaseline3d_h36m": 1, "videopose3d_243_coco": 243, "motionbert_dstformer_243_h36m": 243,
            "motionbert_dstformer_ft_243_h36m": 243}[name] == lifter.receptive_field


COCO17 = CATALOGUE[DEFAULT_MODELS["pose"]].keypoint_names
OTHER_SKELETONS = [n for n in BY_STAGE["pose"] if CATALOGUE[n].keypoint_names != COCO17]


@pytest.mark.parametrize("stage,name", [(s, n) for s in ("pose", "lifter") for n in BY_STAGE[s] if n not in OTHER_SKELETONS])
def test_a_job_takes_any_model_of_a_stage(stage, name):
    JobOptions(input="in", output="out", models=dict(DEFAULT_MODELS, **{stage: name})).validate(CATALOGUE)


@pytest.mark.parametrize("name", OTHER_SKELETONS)
def test_a_job_refuses_a_model_of_another_skeleton_until_outputs_record_theirs(name):
    """Whole-body and animal models load and predict from Python; a job's tables are COCO-17, so a job with
    one would write its joints under COCO's names (AP-10K's 17) or fail in every shard (whole-body's 133)."""
    with pytest.raises(OptionError) as info:
        JobOptions(input="in", output="out", models=dict(DEFAULT_MODELS, pose=name)).validate(CATALOGUE)
    assert info.value.option == "--pose-model" and "COCO-17 only" in str(info.value) and "load_model" in str(info.value)


def test_a_model_of_another_stage_is_refused_naming_the_option():
    with pytest.raises(OptionError) as info:
        JobOptions(input="in", output="out", models=dict(DEFAULT_MODELS, pose="simplebaseline3d_h36m")).validate(CATALOGUE)
    assert info.value.option == "--pose-model" and "is a lifter model, not a pose model" in str(info.value)
    assert "rtmpose_m_coco_256x192" in str(info.value)
    with pytest.raises(OptionError) as info:
        JobOptions(input="in", output="out", models=dict(DEFAULT_MODELS, lifter="no_such")).validate(CATALOGUE)
    assert info.value.option == "--lifter" and "simplebaseline3d_h36m" in str(info.value)
