"""`posepipe weights list | verify`: what a user sees about the catalogue and about a checkpoint file."""
from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from posepipe.jobs.cli import main
from posepipe.models import get_weights, hrnet, videopose3d
from tests.models import release_files


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEPIPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def invoke(*args: str):
    return CliRunner().invoke(main, ["weights", *args])


def test_list_says_which_url_is_plain_http_and_how_files_are_checked():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    spin = lines[[i for i, line in enumerate(lines) if line.startswith("hmr_spin_resnet50")][0] + 1]
    assert "PLAIN HTTP" in spin and "no published hash" in spin
    mmpose = lines[[i for i, line in enumerate(lines) if line.startswith("hrnet_w32_coco_256x192")][0] + 1]
    assert "c78dce93" in mmpose and "only warns" in mmpose and "Apache-2.0" in mmpose
    rows = {row["name"]: row for row in json.loads(invoke("list", "--json").output)}
    assert rows["hmr_spin_resnet50"]["plain_http"] and not rows["yolox_s"]["plain_http"]


def test_verify_a_2019_file_reports_format_keys_and_hash(tmp_path, cache):
    spec = get_weights("videopose3d_243_coco")
    state = videopose3d.build_model(spec).state_dict()
    path = release_files.videopose3d_2019(state, tmp_path / "[bold]pretrained.bin")
    result = invoke("verify", "--weights", f"videopose3d_243_coco={path}")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "videopose3d_243_coco: OK" in out and str(path) in out  # the name printed as is, no markup
    assert "torch legacy format (torch < 1.6), pickle protocol 2" in out
    assert "VideoPose3D run.py {'model_pos'" in out
    assert f"{len(state)} loaded strictly" in out
    assert "ignored    epoch, lr, random_state, optimizer, model_traj, random_state_semi" in out
    assert f"sha256     {hashlib.sha256(path.read_bytes()).hexdigest()}" in out


def test_verify_a_bad_file_fails_with_the_reason(tmp_path, cache):
    page = tmp_path / "yolox_s.pth"
    page.write_text("<html><head><title>Sign in</title></head></html>")
    result = invoke("verify", "--weights", f"yolox_s={page}")
    assert result.exit_code == 4
    assert "yolox_s: FAILED" in result.output and "HTML page (title: 'Sign in')" in result.output
    assert "Traceback" not in result.output


def test_verify_cached_official_file_offline(cache):
    name = "hrnet_w32_coco_256x192"
    result = invoke("verify", name)
    assert result.exit_code == 4 and "not in the cache" in result.output  # nothing is downloaded
    spec = get_weights(name)
    cache.mkdir(parents=True)
    state = hrnet.pose_hrnet(width=32).state_dict()
    release_files.mmpose_0x_2020(state, cache / spec.filename)  # placed by hand where the message said
    result = invoke("verify", name)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "placed in the cache by hand" in out and "mmpose 0.x HRNet" in out
    assert f"{len(state)} renamed" in out  # backbone.* / keypoint_head.* -> official names
    assert "does NOT start with the official file name's prefix c78dce93" in out and "warning" in out


def test_verify_unknown_name_is_a_usage_error():
    result = invoke("verify", "no_such_model")
    assert result.exit_code == 2 and "unknown model" in result.output


def test_list_shows_every_stage_with_accuracy_and_relative_cost():
    from posepipe.models import CATALOGUE

    lines = invoke("list").output.splitlines()
    for name, spec in CATALOGUE.items():
        at = next(i for i, line in enumerate(lines) if line.split()[:3] == [name, spec.stage, spec.family])
        assert lines[at + 2].startswith("    accuracy: "), lines[at + 2]
        assert "GMACs per" in lines[at + 2]
    rtm = lines[next(i for i, line in enumerate(lines) if line.startswith("rtmpose_m_coco_256x192")) + 2]
    assert "coco_val2017_AP=74.6" in rtm and "0.25x hrnet_w32_coco_256x192, the default pose model" in rtm
    assert not lines[next(i for i, line in enumerate(lines) if line.startswith("rtmpose_m_coco_256x192")) + 3].startswith("    skeleton")
    animal = lines[next(i for i, line in enumerate(lines) if line.startswith("hrnet_w32_ap10k_256x256")) + 3]
    assert animal.startswith("    skeleton: 17 joints, not COCO-17") and "load_model" in animal  # a job refuses it
    lifter = lines[next(i for i, line in enumerate(lines) if line.startswith("simplebaseline3d_h36m")) + 2]
    assert "h36m_mpjpe_mm=43.4" in lifter and "per frame" in lifter and "videopose3d_243_coco" in lifter
    rows = {row["name"]: row for row in json.loads(invoke("list", "--json").output)}
    assert rows["rle_res50_coco_256x192"]["stage"] == "pose" and 0.4 < rows["rle_res50_coco_256x192"]["relative_cost"] < 0.6


def test_fetch_from_a_file_that_is_not_a_checkpoint_fails(tmp_path, cache):
    """`weights fetch --from` a text file exited 0 and called it fetched: it is loaded now, exit 4."""
    (tmp_path / "yolox_s.pth").write_text("404: Not Found\n")
    result = CliRunner().invoke(main, ["weights", "fetch", "yolox_s", "--from", str(tmp_path / "yolox_s.pth")])
    assert result.exit_code == 4 and "not a usable checkpoint" in result.output and "text file" in result.output
