"""`posepipe run --densepose`: DensePose charts of every row in a real job, their table, their commit.

Real parts: `posepipe run` through click on a real local Ray, a clip of real street footage, Parquet read
back with DuckDB and through pipeline.io.readback, every chart decoded from its PNG. The official weights
file (256 MB) is not fetched here, so the job is a plumbing run (--random-weights: generated weights,
labelled so in provenance); what is checked is that each stored row is what DensePose R-CNN, built the
same way, gives for that row's frame and box, that the table is keyed like poses/ and committed with it,
and that a file the model cannot use stops the job before any work. The model against detectron2 is
tests/models/test_densepose.py.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import re
import shutil
from collections import OrderedDict
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from posepipe.jobs.cli import main
from posepipe.models.densepose import WEIGHTS, create
from posepipe.pipeline.downstream.densepose import decode_iuv, decode_row
from posepipe.pipeline.io.readback import read_densepose, read_poses
from posepipe.pipeline.io.video import open_video, probe_video
from posepipe.pipeline.options import DENSEPOSE_MODEL, JobOptions, OptionError
from posepipe.pipeline.perframe.densepose import DensePoseStage, time_densepose
from posepipe.pipeline.perframe.shards import ShardTask
from posepipe.pipeline.perframe.worker import PoseWorker
from tests import media
from tests.golden import generate_state_dict

FAST = ["--random-weights", "--max-persons", "2", "--no-flip-test", "--lifter", "simplebaseline3d_h36m"]
MANIFEST = Path(__file__).resolve().parents[2] / "models" / "golden_densepose" / "manifest.json"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "densepose.md"


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["run", *args], env=env, catch_exceptions=False)


def test_missing_or_wrong_weights_stop_the_job_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("POSEPIPE_DENSEPOSE_WEIGHTS", raising=False)
    clip = media.street_clip(tmp_path / "in" / "walk.mp4", n=2)
    out = tmp_path / "out"
    plain = ["--max-persons", "2"]
    result = run(str(clip.parent), "--output", str(out), *plain, "--densepose")
    assert result.exit_code == 2, result.output
    assert all(w in result.output for w in ("--densepose-weights", "POSEPIPE_DENSEPOSE_WEIGHTS", "model_final_162be9.pkl"))
    result = run(str(clip.parent), "--output", str(out), *plain, "--densepose", "--densepose-weights", str(tmp_path / "nope.pkl"))
    assert result.exit_code == 2 and "cannot read" in result.output and "nope.pkl" in result.output
    (tmp_path / "page.pkl").write_text("<!DOCTYPE html><html><title>Access denied</title></html>")
    result = run(str(clip.parent), "--output", str(out), *plain, "--densepose", env={"POSEPIPE_DENSEPOSE_WEIGHTS": str(tmp_path / "page.pkl")})
    assert result.exit_code == 2 and "HTML page" in result.output
    with open(tmp_path / "other.pkl", "wb") as f:  # detectron2's container, another model's state
        pickle.dump({"model": {"backbone.fpn_lateral2.bias": np.zeros(256, np.float32)}, "__author__": "x"}, f)
    result = run(str(clip.parent), "--output", str(out), *plain, "--densepose", "--densepose-weights", str(tmp_path / "other.pkl"))
    assert result.exit_code == 2 and "not a DensePose R-CNN checkpoint" in result.output
    assert not out.exists()  # refused before any work: not even the output folder


def test_the_stage_loads_the_official_layout_and_keeps_only_its_hash(tmp_path):
    state = generate_state_dict(MANIFEST, {"seed": np.int64(3)})
    path = tmp_path / "model_final_162be9.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": OrderedDict((k, v.numpy()) for k, v in state.items()), "__author__": "Detectron2 Model Zoo"}, f)
    options = JobOptions(input="in", output="out", densepose=True, densepose_weights=str(path))
    options.check_densepose()
    stage = DensePoseStage(options, "cpu")
    assert torch.equal(stage.predictor.model.roi_heads.densepose_predictor.u_lowres.weight,
                       state["roi_heads.densepose_predictor.u_lowres.weight"])
    frame = media.source_frames(1, (96, 64))[0]
    charts = stage.charts([frame], np.array([0, 0]), np.array([[10, 5, 40, 60], [200, 200, 220, 230]], np.float32))
    assert charts["densepose_png"][1] is None and charts["densepose_box_xywh"][1].tolist() == [0, 0, 0, 0]
    assert decode_row({"iuv_png": charts["densepose_png"][0], "chart_box_xywh": charts["densepose_box_xywh"][0]}).i.shape == (55, 30)
    assert options.densepose_files()["densepose_weights_sha256"] in json.dumps(options.public())
    assert "model_final_162be9" not in json.dumps(options.public())  # a local path: never stored
    with pytest.raises(OptionError, match="--densepose-weights"):
        JobOptions(input="in", output="out", densepose=True).check_densepose()


def test_a_densepose_job_its_rows_and_their_commit(ray_local, tmp_path):
    clip = media.street_clip(tmp_path / "in" / "walk.mp4", n=3)
    out, plain_out = tmp_path / "out", tmp_path / "plain"
    result = run(str(clip.parent), "--output", str(out), *FAST, "--densepose", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ok"] == 1 and summary["rows"] > 0

    # one densepose row per poses row, same key and box; parts named as the poses parts
    con = duckdb.connect()
    key = "video_id, frame_index, person_index"
    poses = con.sql(f"SELECT {key}, track_id, bbox_xyxy FROM read_parquet('{out}/poses/**/*.parquet') ORDER BY {key}").fetchall()
    charts = con.sql(f"SELECT {key}, track_id, bbox_xyxy FROM read_parquet('{out}/densepose/**/*.parquet') ORDER BY {key}").fetchall()
    assert charts == poses and len(poses) == summary["rows"]
    names = lambda table: sorted(p.relative_to(out / table).as_posix() for p in (out / table).rglob("*.parquet"))  # noqa: E731
    assert names("densepose") == names("poses")

    # every row decodes, over its box, and is what the model gives for that frame and box
    rows = read_densepose(str(out)).to_pylist()
    assert [(r["frame_index"], r["person_index"]) for r in rows] == [(p[1], p[2]) for p in poses]
    with open_video(str(clip)) as video:
        frames = [f for _, window, _ in video.frames(0, 3) for f in window]
    model = create(WEIGHTS[DENSEPOSE_MODEL], None, device=torch.device("cpu"))
    flips = pixels = 0
    for r in rows:
        chart = decode_row(r)
        assert chart is not None and chart.i.shape == chart.u.shape == (r["chart_box_xywh"][3], r["chart_box_xywh"][2])
        assert chart.i.max() <= 24 and 0 <= chart.u.min() and chart.v.max() <= 1
        ref = model.predict(frames[r["frame_index"]], np.asarray([r["bbox_xyxy"]], np.float64))[0]
        assert tuple(r["chart_box_xywh"]) == ref.box_xywh
        flips += int((chart.i != ref.iuv[0]).sum())
        pixels += chart.i.size
        same = chart.i == ref.iuv[0]
        assert np.abs(np.round(chart.u * 255)[same] - ref.iuv[1][same]).max(initial=0) <= 1
        full_i, _, _ = chart.in_frame(*frames[0].shape[:2])
        assert full_i.shape == frames[0].shape[:2]
    # batched with the window's other frames vs alone: summation order only
    assert flips <= 1e-3 * pixels, f"{flips} of {pixels} labels differ"

    # docs/densepose.md's reading examples, as written, on this output
    for block in re.findall(r"```python densepose\n(.*?)```", DOCS.read_text(), flags=re.S):
        namespace: dict = {}
        exec(compile(block.replace("out/demo", str(out)), "docs/densepose.md", "exec"), namespace)
        assert namespace["chart"].i.shape == (namespace["chart"].box_xywh[3], namespace["chart"].box_xywh[2])

    # provenance: generated weights, said so
    part = next((out / "densepose").rglob("*.parquet"))
    text = con.sql(f"SELECT value FROM parquet_kv_metadata('{part}') WHERE key = 'posepipe.provenance'").fetchall()[0][0]
    options = json.loads(text)["options"]
    assert options["densepose"] is True and options["densepose_weights_sha256"] == "random" and options["random_weights"]

    # the commit: a superseded attempt's parts and a killed finish's (parts, no row) lie beside the
    # committed ones; readers never see them, and the rerun's end deletes them with their poses parts
    first = next((out / "densepose").rglob("*.parquet"))
    for attempt in ("0badc0de", "feedf00d"):
        for table in ("poses", "densepose"):
            source = out / table / first.relative_to(out / "densepose")
            shutil.copy(source, source.with_name(source.name.rsplit("-", 1)[0] + f"-{attempt}.parquet"))
    assert len(read_densepose(str(out))) == len(rows) and len(read_poses(str(out))) == len(rows)
    again = run(str(clip.parent), "--output", str(out), *FAST, "--densepose", "--force", "--json")
    assert again.exit_code == 0, again.output
    assert names("densepose") == names("poses") and not any("0badc0de" in n or "feedf00d" in n for n in names("densepose"))
    attempt = con.sql(f"SELECT commit_attempt FROM read_parquet('{out}/videos/*.parquet')").fetchall()[0][0]
    assert all(n.endswith(f"-{attempt}.parquet") for n in names("densepose"))
    assert len(read_densepose(str(out))) == len(rows)

    # a job without --densepose writes no densepose/ and its rows read back as none
    assert run(str(clip.parent), "--output", str(plain_out), *FAST).exit_code == 0
    assert not (plain_out / "densepose").exists() and read_densepose(str(plain_out)).num_rows == 0


def test_both_per_frame_paths_chart_their_own_rows(tmp_path):
    """The reference path charts a window's rows with that window's frames; the device path finishes a
    window while the next one is queued, so its charts must come from the finished window's frames, not
    the queued one's: one frame per window, two windows, both paths, the same charts for the same rows."""
    clip = media.street_clip(tmp_path / "walk.mp4", n=2)
    probe = probe_video(str(clip))
    options = JobOptions(input=str(clip), output="unused", random_weights=True, max_persons=1, flip_test=False,
                         frames_per_batch=1, densepose=True)
    worker = PoseWorker(options, threads=2)
    shards = {}
    for on_device in (False, True):
        worker.options = dataclasses.replace(options, device_path=on_device)
        assert worker.use_device_path is on_device
        shards[on_device] = worker.process_shard(ShardTask("walk.mp4", str(clip), 0, 2, info=probe.info.as_dict()),
                                                 header=probe.header)
    reference, device = shards[False], shards[True]
    assert len(reference.frame_index) == len(reference.densepose_png) > 0 and "densepose" in reference.timings
    np.testing.assert_array_equal(device.frame_index, reference.frame_index)
    np.testing.assert_array_equal(device.densepose_box_xywh, reference.densepose_box_xywh)
    differ = pixels = 0
    for a, b in zip(device.densepose_png, reference.densepose_png):
        assert a is not None and b is not None
        differ += int((decode_iuv(a) != decode_iuv(b)).sum())  # the device path's boxes are within 1e-3 px
        pixels += decode_iuv(b).size
    assert differ <= 1e-3 * pixels, f"{differ} of {pixels} chart values differ between the paths"


def test_the_bench_function_times_what_a_worker_runs():
    """time_densepose (for the bench): persons and frames counted, the stored PNG bytes summed."""
    frame = media.source_frames(1, (96, 64))[0]
    timing = time_densepose([frame], [np.array([[10, 5, 40, 60], [50, 10, 90, 62]], np.float32)], repeats=1, warmup=0)
    assert (timing.frames, timing.persons) == (1, 2) and timing.seconds > 0 and timing.png_bytes > 0
    assert timing.persons_per_s == pytest.approx(2 / timing.seconds) and timing.bytes_per_person == timing.png_bytes / 2


@pytest.mark.slow
def test_a_finisher_killed_between_its_charts_and_its_commit_leaves_nothing_behind(tmp_path):
    """A real kill: the finisher process exits (os._exit, POSEPIPE_TEST_KILL_AT) after writing the video's
    poses/ and densepose/ parts and before its commit row. The job finishes the video again under another
    attempt; at its end only the committed attempt's parts are left in both folders, one chart per row."""
    from tests.processes import Spawner, posepipe_argv, posepipe_env

    clip = media.street_clip(tmp_path / "in" / "walk.mp4", n=2)
    markers, out, log = tmp_path / "markers", tmp_path / "out", tmp_path / "run.log"
    markers.mkdir()
    spawn = Spawner()
    try:
        proc = spawn.start(posepipe_argv("run", str(clip.parent), "--output", str(out), *FAST, "--densepose", "--json"),
                           log, posepipe_env(POSEPIPE_TEST_KILL_AT="finish:walk.mp4", POSEPIPE_TEST_KILL_DIR=str(markers)))
        proc.wait(timeout=600)
    finally:
        spawn.cleanup()
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    assert len(list(markers.iterdir())) == 1, f"the finisher was not killed:\n{text[-3000:]}"
    summary = json.loads(text[text.rindex("\n{") + 1:])
    assert summary["ok"] == 1 and summary["failed"] == 0 and summary["rows"] > 0
    attempt = duckdb.sql(f"SELECT commit_attempt FROM read_parquet('{out}/videos/*.parquet')").fetchall()[0][0]
    names = {table: sorted(p.relative_to(out / table).as_posix() for p in (out / table).rglob("*.parquet"))
             for table in ("poses", "densepose")}
    assert names["densepose"] == names["poses"] and all(n.endswith(f"-{attempt}.parquet") for n in names["densepose"])
    charts, poses = read_densepose(str(out)), read_poses(str(out), columns=["frame_index", "person_index", "track_id"])
    assert charts.num_rows == poses.num_rows == summary["rows"]
    key = ["frame_index", "person_index", "track_id"]
    assert charts.select(key).to_pylist() == poses.select(key).to_pylist()
    assert all(decode_row(r) is not None for r in charts.to_pylist())
