"""``posepipe eval`` through click's CliRunner on a tiny OUTPUT written with the real schema.

The poses/ folder holds one video, 3 frames, two people a frame. Person A's GT equals the
prediction; person B's GT is 30 px off (PCK@0.2 of a 100 px box: wrong), so PCK is 0.5. In 3D,
every joint but the pelvis is 10 mm off, so MPJPE is 16 x 10 / 17 mm.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from posepipe.jobs.evaluate import eval_command
from posepipe.models.skeletons import H36M17_NAMES
from posepipe.pipeline.downstream.metrics import COCO17_PCP_LIMBS
from posepipe.pipeline.io.schema import poses_table, videos_table

VIDEO = "clips/a.mp4"
FRAMES = 3
K = 17
BOX_A = np.array([100.0, 100.0, 200.0, 300.0])   # longer side 200
BOX_B = np.array([400.0, 100.0, 500.0, 200.0])   # longer side 100
MPJPE_MM = 16 * 10.0 / 17


def _skeleton(box: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(box[:2] + 5, box[2:] - 5, size=(K, 2)).astype(np.float64)


@pytest.fixture(scope="module")
def poses() -> dict[str, np.ndarray]:
    """Row arrays: frames 0..2, person A (track 1) then person B (track 2) in each."""
    n = 2 * FRAMES
    rng = np.random.default_rng(0)
    kp3d = rng.normal(0, 0.3, (n, K, 3))
    kp3d -= kp3d[:, :1]
    rows = {
        "video_id": VIDEO,
        "frame_index": np.repeat(np.arange(FRAMES, dtype=np.int32), 2),
        "timestamp_s": np.repeat(np.arange(FRAMES) / 30.0, 2),
        "track_id": np.tile(np.array([1, 2], np.int32), FRAMES),
        "bbox_xyxy": np.tile(np.stack([BOX_A, BOX_B]), (FRAMES, 1)),
        "bbox_score": np.tile(np.array([0.9, 0.8], np.float32), FRAMES),
        "keypoints_2d": np.stack([_skeleton(BOX_A if i % 2 == 0 else BOX_B, i) for i in range(n)]),
        "keypoint_scores": np.full((n, K), 0.9),
        "keypoints_3d": kp3d,
    }
    return rows


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory, poses: dict[str, np.ndarray]) -> Path:
    root = tmp_path_factory.mktemp("out")
    part = root / "poses" / "x" / "part-00000000-00000010.parquet"
    part.parent.mkdir(parents=True)
    rows = dict(poses)
    rows["keypoints_3d__valid"] = np.ones(len(rows["frame_index"]), bool)
    rows["keypoints_3d__valid"][-1] = False   # last row (frame 2, person B) has no 3D
    pq.write_table(poses_table(rows), part)
    assert pq.read_table(part).num_rows == 2 * FRAMES
    # the commit marker a run writes after a video's parts: readers count only committed videos
    (root / "videos").mkdir()
    pq.write_table(videos_table([{"video_id": VIDEO, "uri": f"/in/{VIDEO}", "status": "ok", "num_frames": FRAMES,
                                  "fps": 30.0, "width": 640, "height": 480, "num_rows": 2 * FRAMES}]),
                   root / "videos" / "x.parquet")
    return root


def coco_gt(poses: dict[str, np.ndarray], head_size: float | None = None) -> dict:
    """GT listed B before A in every frame, so only IoU matching gets the pairs right."""
    images, annotations = [], []
    for frame in range(FRAMES):
        images.append({"id": 10 + frame, "video_id": VIDEO, "frame_index": frame, "width": 640, "height": 480})
        for person, box, offset in ((1, BOX_B, (18.0, 24.0)), (0, BOX_A, (0.0, 0.0))):
            xy = poses["keypoints_2d"][2 * frame + person] + offset
            ann = {"id": len(annotations) + 1, "image_id": 10 + frame, "category_id": 1,
                   "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                   "keypoints": np.column_stack([xy, np.full(K, 2.0)]).reshape(-1).tolist()}
            if head_size is not None:
                ann["head_size"] = head_size
            annotations.append(ann)
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def gt_3d(poses: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    truth = np.array(poses["keypoints_3d"], np.float64)
    truth[:, 1:, 0] += 0.010   # 10 mm on every joint but the pelvis
    return {"video_id": np.full(2 * FRAMES, VIDEO), "frame_index": np.array(poses["frame_index"], np.int64),
            "keypoints_3d": truth, "bbox_xyxy": np.array(poses["bbox_xyxy"], np.float64)}


def write_gt_3d(path: Path, columns: dict[str, np.ndarray], fmt: str) -> Path:
    file = path / f"gt3d.{fmt}"
    n = len(columns["video_id"])
    if fmt == "npz":
        np.savez(file, **columns)
    elif fmt == "parquet":
        table = {k: (v.reshape(n, -1).tolist() if v.ndim > 1 else v) for k, v in columns.items()}
        pq.write_table(pa.table(table), file)
    else:
        table = {"video_id": columns["video_id"], "frame_index": columns["frame_index"]}
        flat = columns["keypoints_3d"].reshape(n, -1)
        for j, (joint, axis) in enumerate((joint, axis) for joint in H36M17_NAMES for axis in "xyz"):
            table[f"{joint}_{axis}"] = flat[:, j]
        if "bbox_xyxy" in columns:
            for j, name in enumerate(("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")):
                table[name] = columns["bbox_xyxy"][:, j]
        if "track_id" in columns:
            table["track_id"] = columns["track_id"]
        pacsv.write_csv(pa.table(table), file)
    return file


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(eval_command, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def run_json(*args: str | Path) -> dict:
    code, out = run(*args, "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.fixture
def gt_json(tmp_path: Path, poses: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco_gt(poses)))
    return path


# --------------------------------------------------------------------------------------------
# 2D


def test_all_2d_metrics_as_json(output: Path, gt_json: Path, poses: dict[str, np.ndarray]):
    report = run_json(output, "--gt", gt_json)
    m = report["metrics"]
    assert m["pck"] == pytest.approx(0.5)
    # PCP: A's 8 limbs right in 3 frames; B's 30 px endpoint errors pass on limbs longer than 60 px
    b = poses["keypoints_2d"][1::2]
    long_b = sum(int((np.linalg.norm(b[:, i] - b[:, j], axis=-1) > 60).sum()) for i, j in COCO17_PCP_LIMBS)
    assert m["pcp"] == pytest.approx((3 * 8 + long_b) / 48)
    assert 0.0 < m["AP"] < 1.0
    assert "pckh" not in m                       # no head sizes in this GT
    assert report["videos"] == [VIDEO] and report["ground_truth"] == "2d"
    assert report["counts"] == {"gt_frames": 3, "gt_persons": 6, "matched": 6, "unmatched_gt": 0,
                                "unmatched_predictions": 0, "videos_without_predictions": 0}


def test_pck_alpha_and_torso_norm(output: Path, gt_json: Path):
    # B's 30 px error is 0.3 of its 100 px box: correct once alpha > 0.3
    assert run_json(output, "--gt", gt_json, "--metric", "pck", "--alpha", "0.35")["metrics"] == {"pck": 1.0}
    torso = run_json(output, "--gt", gt_json, "--metric", "pck", "--norm", "torso")
    assert set(torso["metrics"]) == {"pck"} and "norm=torso" in torso["settings"]["pck"]


def test_pckh_uses_head_size_from_the_gt(output: Path, tmp_path: Path, poses: dict[str, np.ndarray]):
    path = tmp_path / "gt_head.json"
    path.write_text(json.dumps(coco_gt(poses, head_size=50.0)))   # limit 0.5 x 50 = 25 px < 30 px
    assert run_json(output, "--gt", path, "--metric", "pckh")["metrics"] == {"pckh": pytest.approx(0.5)}
    assert run_json(output, "--gt", path, "--metric", "pckh", "--alpha", "0.7")["metrics"] == {"pckh": 1.0}
    gt = coco_gt(poses)
    for ann in gt["annotations"]:
        ann["head_bbox"] = [0, 0, 90, 120]   # MPII: 0.6 x 150 = 90 px, limit 45 px > 30 px
    path.write_text(json.dumps(gt))
    assert run_json(output, "--gt", path)["metrics"]["pckh"] == 1.0


def test_unmatched_gt_counts_as_wrong(output: Path, tmp_path: Path, poses: dict[str, np.ndarray]):
    gt = coco_gt(poses)
    gt["images"].append({"id": 99, "video_id": VIDEO, "frame_index": 50})   # no predictions there
    gt["annotations"].append({**gt["annotations"][1], "id": 99, "image_id": 99})
    path = tmp_path / "gt_extra.json"
    path.write_text(json.dumps(gt))
    report = run_json(output, "--gt", path, "--metric", "pdj")
    assert report["counts"]["unmatched_gt"] == 1
    # B's torso is at most 90 x sqrt(2) px, so its limit (0.2 x torso < 26 px) misses the 30 px
    # error: A is right in 3 frames, B (3 frames) and the extra copy of B are wrong.
    assert report["metrics"]["pdj"] == pytest.approx(3 / 7)


def test_table_output(output: Path, gt_json: Path):
    code, out = run(output, "--gt", gt_json, "--metric", "pck")
    assert code == 0, out
    assert "pck" in out and "50.0 %" in out and "matched: 6" in out


# --------------------------------------------------------------------------------------------
# 3D


@pytest.mark.parametrize("fmt", ["parquet", "csv", "npz"])
def test_mpjpe_from_each_gt_format(output: Path, tmp_path: Path, poses: dict[str, np.ndarray], fmt: str):
    report = run_json(output, "--gt", write_gt_3d(tmp_path, gt_3d(poses), fmt), "--metric", "mpjpe")
    m = report["metrics"]
    assert m["mpjpe"] == pytest.approx(MPJPE_MM, rel=1e-5)
    assert 0.0 < m["p_mpjpe"] < MPJPE_MM and 0.0 < m["n_mpjpe"] <= MPJPE_MM + 1e-6
    assert report["counts"]["evaluated"] == 5 and report["counts"]["matched_without_3d"] == 1


def test_mpjpe_matching_by_track_id_and_single_person(output: Path, tmp_path: Path, poses: dict[str, np.ndarray]):
    columns = gt_3d(poses)
    del columns["bbox_xyxy"]
    by_track = {**columns, "track_id": np.array(poses["track_id"], np.int64)}
    report = run_json(output, "--gt", write_gt_3d(tmp_path, by_track, "npz"))
    assert report["metrics"]["mpjpe"] == pytest.approx(MPJPE_MM, rel=1e-5)
    assert "track_id" in report["settings"]["mpjpe"]
    # No boxes, no track ids: only frames with one GT and one prediction can be paired; none here.
    single = {k: v[::2] for k, v in columns.items()}
    report = run_json(output, "--gt", write_gt_3d(tmp_path, single, "parquet"))
    assert report["metrics"]["mpjpe"] is None and report["counts"]["unmatched_gt"] == 3


# --------------------------------------------------------------------------------------------
# Errors name the option and the fix


def test_errors(output: Path, gt_json: Path, tmp_path: Path, poses: dict[str, np.ndarray]):
    code, out = run(tmp_path, "--gt", gt_json)
    assert code == 2 and "OUTPUT" in out and "not a posepipe OUTPUT" in out
    code, out = run(output, "--gt", gt_json, "--metric", "pckh")
    assert code == 2 and "--metric pckh" in out and "head_size" in out
    code, out = run(output, "--gt", gt_json, "--metric", "mpjpe")
    assert code == 2 and "--metric mpjpe" in out and "3D" in out
    code, out = run(output, "--gt", gt_json, "--video", "nope.mp4")
    assert code == 2 and "--video" in out and VIDEO in out
    gt3 = write_gt_3d(tmp_path, gt_3d(poses), "npz")
    code, out = run(output, "--gt", gt3, "--metric", "pck")
    assert code == 2 and "--metric pck" in out and ".json" in out
    code, out = run(output, "--gt", gt3, "--alpha", "0.1")
    assert code == 2 and "--alpha" in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []}))
    code, out = run(output, "--gt", bad)
    assert code == 2 and "--gt" in out and "video_id" in out
    code, out = run(output, "--gt", tmp_path / "missing.json")
    assert code == 2 and "--gt" in out


# --------------------------------------------------------------------------------------------
# Hostile ground truth and outputs: a message naming the file, the record and the fix; exit 2


def _gt_with_image(poses: dict[str, np.ndarray], **image: object) -> dict:
    gt = coco_gt(poses)
    gt["images"][0].update(image)
    return gt


@pytest.mark.parametrize(("frame_index", "shown"), [("3", "'3'"), (1.5, "1.5"), (None, "None"), (True, "True"), (-1, "-1")])
def test_gt_frame_index_that_is_not_a_frame_number_is_refused(output: Path, tmp_path: Path, poses, frame_index, shown):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_gt_with_image(poses, frame_index=frame_index)))
    code, out = run(output, "--gt", path)
    assert code == 2, out
    assert "'--gt'" in out and str(path) in out and "image id=10" in out and f"frame_index {shown}" in out
    assert "JSON integer" in out


def test_gt_frame_index_written_as_a_whole_float_is_the_frame(output: Path, tmp_path: Path, poses):
    gt = coco_gt(poses)
    for image in gt["images"]:
        image["frame_index"] = float(image["frame_index"])
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert run_json(output, "--gt", path, "--metric", "pck")["metrics"] == {"pck": pytest.approx(0.5)}


@pytest.mark.parametrize(("values", "message"), [
    (["0", "1", "1"], "holds strings"),
    ([0.0, 1.5, 2.0], "frame_index is 1.5 in row 1"),
    ([0.0, float("nan"), 2.0], "frame_index is nan in row 1"),
])
def test_3d_gt_frame_index_that_is_not_whole_numbers_is_refused(output: Path, tmp_path: Path, poses, values, message):
    columns = {k: v[:3] for k, v in gt_3d(poses).items()}
    table = {k: (v.reshape(3, -1).tolist() if v.ndim > 1 else v) for k, v in columns.items()}
    table["frame_index"] = values
    path = tmp_path / "gt3d.parquet"
    pq.write_table(pa.table(table), path)
    code, out = run(output, "--gt", path)
    assert code == 2, out
    assert "'--gt'" in out and str(path) in out and message in out


def test_gt_that_names_no_video_of_the_output_is_refused(output: Path, tmp_path: Path, poses):
    path = tmp_path / "gt.json"
    gt = coco_gt(poses)
    for image in gt["images"]:
        image["video_id"] = "a.mp4"          # the file name, not the path relative to INPUT
    path.write_text(json.dumps(gt))
    code, out = run(output, "--gt", path)
    assert code == 2, out
    assert str(path) in out and "a.mp4" in out and VIDEO in out and "relative to the job's INPUT" in out


def test_gt_whose_frames_are_past_the_videos_end_is_refused(output: Path, tmp_path: Path, poses):
    columns = gt_3d(poses)
    columns["frame_index"] = columns["frame_index"] + 100
    code, out = run(output, "--gt", write_gt_3d(tmp_path, columns, "npz"))
    assert code == 2, out
    assert f"{VIDEO} has frames 0..2 and the GT names 100..102" in out


def test_gt_with_no_person_is_refused(output: Path, tmp_path: Path, poses):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({**coco_gt(poses), "annotations": []}))
    code, out = run(output, "--gt", path)
    assert code == 2 and "no person to score" in out and str(path) in out


@pytest.mark.parametrize(("change", "message"), [
    (lambda gt: gt["images"].append(7), "images[3] in"),
    (lambda gt: gt["images"][0].pop("id"), "has id None"),
    (lambda gt: gt["annotations"].append("x"), "annotations[6] in"),
    (lambda gt: gt["annotations"][0].update(keypoints=["a"] * 51), "a list of 51 (str)"),
    (lambda gt: gt["annotations"][0].update(head_size="big"), "head_size 'big'"),
    (lambda gt: gt["annotations"][0].update(head_bbox=[1, 2]), "head_bbox a list of 2"),
    (lambda gt: gt.update(categories={"id": 1}), "'categories'"),
])
def test_malformed_coco_records_are_named(output: Path, tmp_path: Path, poses, change, message):
    gt = coco_gt(poses)
    change(gt)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    code, out = run(output, "--gt", path)
    assert code == 2, out
    assert "'--gt'" in out and str(path) in out and message in out


def test_annotations_without_category_id_are_the_person_category(output: Path, tmp_path: Path, poses):
    gt = coco_gt(poses)
    for ann in gt["annotations"]:
        del ann["category_id"]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert 0.0 < run_json(output, "--gt", path, "--metric", "coco-ap")["metrics"]["AP"] < 1.0


def test_names_in_the_table_are_printed_as_they_are(tmp_path: Path, poses):
    """rich would read '[/x]' in a folder or file name as a closing tag and stop with MarkupError."""
    from tests.fake_output import FakeVideo, fake_output

    root = tmp_path / "out [/x] :smile:"
    fake_output(root, [FakeVideo(VIDEO, FRAMES, tracks={1: [0, 1, 2]})], junk=False)
    gt = coco_gt(poses)
    gt_path = tmp_path / "gt [bold]x[red].json"
    gt_path.write_text(json.dumps(gt))
    code, out = run(root, "--gt", gt_path, "--metric", "pck")
    assert code == 0, out
    assert "[/x] :smile:" in out and "gt [bold]x[red].json" in out


def test_only_committed_videos_are_scored(tmp_path: Path):
    """poses/ parts of a video without its videos/ row (still running, or crashed) are not results yet;
    stray files in poses/ are ignored, as every other reader does."""
    from tests.fake_output import expected_keypoints, fake_output

    spec = fake_output(tmp_path / "out")              # junk: temp files, a README, an uncommitted video
    index = spec.index["jump/b.mp4"]
    images, annotations = [], []
    for frame in range(6):
        xy = expected_keypoints(index, 0, frame).astype(np.float64)
        box = [xy[:, 0].min() - 4, xy[:, 1].min() - 4, xy[:, 0].max() + 4, xy[:, 1].max() + 4]
        images.append({"id": frame, "video_id": "jump/b.mp4", "frame_index": frame})
        annotations.append({"id": frame + 1, "image_id": frame, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "keypoints": np.column_stack([xy, np.full(K, 2.0)]).reshape(-1).tolist()})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    assert run_json(spec.root, "--gt", path, "--metric", "pck")["metrics"] == {"pck": 1.0}
    for image in images:
        image["video_id"] = "jump/in_progress.mp4"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    code, out = run(spec.root, "--gt", path)
    assert code == 2 and "jump/in_progress.mp4" in out and "5 video(s)" in out


def test_eval_reads_an_s3_output_and_refuses_credentials_in_its_uri(output: Path, gt_json: Path, s3_server):
    from tests.fake_output import upload_tree
    from tests.servers import make_bucket

    make_bucket(s3_server.endpoint_url, "eval-results")
    upload_tree(output, s3_server.endpoint_url, "eval-results", "runs/r1")
    report = run_json("s3://eval-results/runs/r1", "--gt", gt_json, "--metric", "pck")
    assert report["metrics"] == {"pck": pytest.approx(0.5)} and report["output"] == "s3://eval-results/runs/r1"
    code, out = run("s3://AKIAEXAMPLE:hunter2@eval-results/runs/r1?X-Amz-Signature=abc", "--gt", gt_json)
    assert code == 2 and "credentials" in out
    assert "hunter2" not in out and "AKIAEXAMPLE" not in out and "Signature" not in out


def test_video_ids_from_the_gt_are_printed_inert(output: Path, tmp_path: Path, poses):
    gt = coco_gt(poses)
    for image in gt["images"]:
        image["video_id"] = "evil\x1b[2J\nError: fake.mp4"
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    code, out = run(output, "--gt", path)
    assert code == 2 and "\x1b" not in out and "evil\\x1b[2J" in out


def test_gt_json_nested_too_deep_for_the_parser_is_a_gt_error(output: Path, tmp_path: Path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    code, out = run(output, "--gt", path)
    assert code == 2 and "'--gt'" in out and "is not a JSON file" in out
