"""`posepipe bench` on a tiny generated clip with random weights: every section is there and positive."""
from __future__ import annotations

import importlib.util
import json

import click
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from posepipe.jobs.bench import bench_command, parse_workers
from posepipe.pipeline.measure.benchmark import cpus_per_worker

FRAMES, WIDTH, HEIGHT = 4, 160, 120
SECTIONS = {"machine", "clip", "settings", "decode_fps", "remote_bytes", "models", "end_to_end_fps",
            "naive_sequential_fps", "speedup"}
MACHINE = {"cpu_count", "cpus_usable", "torch_threads", "device", "device_name", "torch", "ray", "random_weights",
           "model_load_seconds"}
STAGES = {"detector", "pose", "mesh", "lifter"}


@pytest.fixture()
def clip(tmp_path):
    path = tmp_path / "tiny.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (WIDTH, HEIGHT))
    rng = np.random.default_rng(0)
    for _ in range(FRAMES):
        # Smooth texture, not flat colour: on a flat frame every anchor of the random detector scores
        # the same, and which box survives (possibly one off the frame) is then a tie-break.
        small = rng.integers(0, 256, (HEIGHT // 10, WIDTH // 10, 3), dtype=np.uint8)
        writer.write(cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC))
    writer.release()
    return path


def positive_rate(section: dict, count: str = "frames", unit: str = "fps") -> None:
    assert section[count] > 0 and section["seconds"] > 0 and section[unit] > 0, section
    assert section[unit] == pytest.approx(section[count] / section["seconds"], rel=0.01, abs=1e-3), section


@pytest.mark.slow
def test_bench_reports_every_section(clip, tmp_path):
    out = tmp_path / "results.json"
    result = CliRunner().invoke(bench_command, [str(clip), "--random-weights", "--frames", str(FRAMES), "--max-persons", "1",
                                                "--device", "cpu", "--no-ray", "--no-h264", "--output", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads(out.read_text()) == report
    assert SECTIONS <= set(report), sorted(report)
    assert "workers" not in report and "memory" not in report and "run_job" not in report["end_to_end_fps"]
    assert "decode_h264_fps" not in report and "run_job_2_workers" not in report["remote_bytes"]
    remote = report["remote_bytes"]
    for key in (k for k in remote if k.startswith("in_process_shard_frames_")):
        # Served over loopback HTTP, probe + every shard read the file about once (headers included).
        assert remote[key]["frames"] == FRAMES and 0.9 < remote[key]["bytes_over_input"] < 1.6, remote

    assert MACHINE <= set(report["machine"]), sorted(report["machine"])
    assert report["machine"]["random_weights"] is True and report["machine"]["device"] == "cpu"
    assert report["clip"]["num_frames"] == FRAMES and (report["clip"]["width"], report["clip"]["height"]) == (WIDTH, HEIGHT)

    for how in ("sequential", "get_batch"):
        positive_rate(report["decode_fps"][how])
        assert report["decode_fps"][how]["frames"] == FRAMES

    models = report["models"]
    assert STAGES <= set(models), sorted(models)
    assert models["persons_per_frame"] == 1.0  # random weights see people everywhere; --max-persons pins it
    for stage in STAGES:
        positive_rate(models[stage])
    for stage in ("pose", "mesh"):
        assert models[stage]["crops"] == FRAMES and models[stage]["crops_per_s"] > 0
    assert models["lifter"]["frames"] == FRAMES and models["lifter"]["receptive_field"] > 1

    in_process = report["end_to_end_fps"]["in_process"]
    positive_rate(in_process)
    assert in_process["frames"] == FRAMES and in_process["rows"] == FRAMES
    naive = report["naive_sequential_fps"]
    positive_rate(naive)
    assert naive["frames"] == FRAMES and naive["crops"] == FRAMES
    assert set(naive["stage_seconds"]) == {"decode", "detect", "pose2d", "smpl", "track", "lift"}
    assert report["speedup"] == pytest.approx(in_process["fps"] / naive["fps"], rel=0.01)
    # The per-frame work on both paths, with what each costs the host per frame and each stage.
    paths = report["per_frame_paths"]
    assert {"reference", "device"} <= set(paths), sorted(paths)
    for label in ("reference", "device"):
        positive_rate(paths[label])
        assert paths[label]["frames"] == FRAMES and paths[label]["rows"] == FRAMES
        assert paths[label]["host_cpu_ms_per_frame"] > 0 and paths[label]["process_cpu_ms_per_frame"] > 0
    assert {"device_detect", "device_pose2d", "device_smpl", "host_select"} <= set(paths["device"]["stage_ms_per_frame"])
    assert paths["device_over_reference_fps"] == pytest.approx(paths["device"]["fps"] / paths["reference"]["fps"], rel=0.01)


def test_workers_option_and_cpu_split():
    assert parse_workers("1,2") == [1, 2] and parse_workers(None) == []
    for bad in ("0", "a,b", ","):
        with pytest.raises(click.BadParameter):
            parse_workers(bad)
    assert [cpus_per_worker(2, w) for w in (1, 2, 3)] == [2, 1, 1]
    assert [cpus_per_worker(16, w) for w in (1, 2, 4)] == [16, 8, 4]


def test_workers_with_no_ray_is_a_usage_error(clip):
    result = CliRunner().invoke(bench_command, [str(clip), "--random-weights", "--no-ray", "--workers", "1,2"])
    assert result.exit_code == 2 and "--no-ray" in result.output


def test_h264_decode_section_reports_each_size_and_thread_count(tmp_path):
    from posepipe.pipeline.measure.benchmark import DECODE_SIZES, DECODE_THREADS, bench_decode_h264

    frames = [np.full((120, 160, 3), 80 + 20 * i, np.uint8) for i in range(3)]
    report = bench_decode_h264(frames, 10.0, tmp_path, n=3)
    has_decord = importlib.util.find_spec("decord") is not None  # the [test] extra has it on x86-64 only
    for label in DECODE_SIZES:
        assert report[label]["bytes"] > 0
        for threads in DECODE_THREADS:
            figures = report[label][f"threads_{threads}"]
            assert figures["pyav"] > 0 and (figures["decord"] > 0 if has_decord else figures["decord"] is None)


def test_decode_sections_measure_pyav_without_decord(clip, tmp_path, monkeypatch):
    """decord is only the comparison (the GPU image has none): without it every PyAV figure is still
    there and the report says decord was not installed, instead of the bench stopping."""
    import sys

    from posepipe.pipeline.measure.benchmark import DECODE_SIZES, DECODE_THREADS, bench_decode, bench_decode_h264

    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError
    report = bench_decode(str(clip), FRAMES, 2)
    positive_rate(report["sequential"])
    assert report["get_batch"] is None and "not installed" in report["decord"], report
    frames = [np.full((120, 160, 3), 80 + 20 * i, np.uint8) for i in range(3)]
    h264 = bench_decode_h264(frames, 10.0, tmp_path, n=3)
    assert "not installed" in h264["decord"]
    for label in DECODE_SIZES:
        for threads in DECODE_THREADS:
            assert h264[label][f"threads_{threads}"]["pyav"] > 0 and h264[label][f"threads_{threads}"]["decord"] is None


def test_refine_section_times_smplify_over_every_posed_person(tmp_path):
    """bench --refine smplify: `models.refine` is SMPLify over the persons the models posed, as the worker runs it."""
    from posepipe.pipeline.measure.benchmark import bench_refine
    from posepipe.pipeline.options import JobOptions
    from posepipe.pipeline.perframe.refine import SMPLifyRefiner
    from tests.models.smplify_reference import write_model_files

    files = write_model_files(tmp_path, 0)
    options = JobOptions(input="in", output="out", refine="smplify", smpl_model=str(files["smpl"]),
                         smpl_prior=str(files["gmm"]), smplify={"iterations": 5})
    refiner = SMPLifyRefiner(options)
    rng = np.random.default_rng(0)
    frames, per_frame = 3, 2
    boxes = [np.tile(np.float32([100, 40, 180, 240]), (per_frame, 1)) for _ in range(frames)]
    pose = [(np.float32([140, 140]) + rng.normal(0, 40, (per_frame, 17, 2)).astype(np.float32),
             rng.uniform(0.3, 1, (per_frame, 17)).astype(np.float32)) for _ in range(frames)]
    mesh = [{"global_orient": np.tile(np.float32([np.pi, 0, 0]), (per_frame, 1)),
             "body_pose": np.zeros((per_frame, 23, 3), np.float32), "betas": np.zeros((per_frame, 10), np.float32),
             "camera": np.tile(np.float32([0.9, 0, 0]), (per_frame, 1))} for _ in range(frames)]
    section = bench_refine(refiner, options, boxes, pose, mesh, frames)
    assert section["method"] == "smplify" and section["iterations_per_stage"] == 5
    assert section["persons"] == section["refined"] == frames * per_frame
    positive_rate(section)
    positive_rate(section, "persons", "persons_per_s")
    assert 0 < section["median_reprojection_px_after"] < section["median_reprojection_px_before"]


def test_refine_without_the_licensed_files_is_a_usage_error(clip, monkeypatch):
    monkeypatch.delenv("POSEPIPE_SMPL_MODEL", raising=False)
    monkeypatch.delenv("POSEPIPE_SMPL_PRIOR", raising=False)
    result = CliRunner().invoke(bench_command, [str(clip), "--random-weights", "--no-ray", "--refine", "smplify"])
    assert result.exit_code == 2 and "--smpl-model" in result.output and "POSEPIPE_SMPL_MODEL" in result.output, result.output


def test_densepose_section_charts_every_posed_box(tmp_path):
    """bench --densepose: `models.densepose` charts the boxes the models posed, as a worker does (generated weights)."""
    from posepipe.pipeline.measure.benchmark import bench_densepose
    from posepipe.pipeline.options import JobOptions
    from posepipe.pipeline.perframe.densepose import load_densepose_stage

    stage = load_densepose_stage(JobOptions(input="in", output="out", densepose=True, random_weights=True), "cpu")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    boxes = [np.float32([[10, 10, 60, 90]]), np.float32([[20, 5, 70, 80], [70, 10, 120, 90]])]
    section = bench_densepose(stage, frames, boxes)
    assert section["persons"] == section["charts"] == 3 and section["frames"] == 2
    positive_rate(section)
    positive_rate(section, "persons", "persons_per_s")
    assert section["png_bytes_per_person"] > 0
