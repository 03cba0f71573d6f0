from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from posepipe.models.skeletons import COCO17_NAMES, H36M17_NAMES
from posepipe.pipeline.downstream.export import (
    ExportError, build_posec3d, parse_split_ratio, rank_tracks, read_csv_mapping, write_posec3d,
)
from tests.fake_output import (
    FakeVideo, default_videos, expected_3d, expected_bbox, expected_camera, expected_keypoints, expected_scores, fake_output,
)

# ---------------------------------------------------------------- a consumer written from the format


def load_posec3d(path: Path, split: str) -> list[dict]:
    """What mmaction2's PoseDataset(split=...) + PoseDecode do with the pickle, with format checks."""
    with open(path, "rb") as handle:
        data = pickle.load(handle)
    assert set(data) == {"split", "annotations"}
    annotations = data["annotations"]
    identifier = "filename" if "filename" in annotations[0] else "frame_dir"
    wanted = set(data["split"][split])
    chosen = [a for a in annotations if a[identifier] in wanted]
    for ann in chosen:
        check_annotation(ann)
        # PoseDecode: sample frames along T for every person
        inds = np.linspace(0, ann["total_frames"] - 1, 4).astype(int)
        assert ann["keypoint"][:, inds].shape[1] == 4
    return chosen


def check_annotation(ann: dict) -> None:
    assert isinstance(ann["frame_dir"], str) and isinstance(ann["label"], int)
    assert isinstance(ann["total_frames"], int)
    for key in ("img_shape", "original_shape"):
        assert isinstance(ann[key], tuple) and len(ann[key]) == 2 and all(isinstance(v, int) for v in ann[key])
    kp = ann["keypoint"]
    assert kp.dtype == np.float32 and kp.ndim == 4 and kp.shape[1] == ann["total_frames"] and kp.shape[0] >= 1
    if "keypoint_score" in ann:  # GenSkeFeat: scores only go with 2D keypoints
        assert kp.shape[-1] == 2
        assert ann["keypoint_score"].dtype == np.float32 and ann["keypoint_score"].shape == kp.shape[:3]


@pytest.fixture()
def out(tmp_path):
    return fake_output(tmp_path / "out")


def by_dir(dataset: dict) -> dict[str, dict]:
    return {a["frame_dir"]: a for a in dataset["annotations"]}


# ---------------------------------------------------------------- 2D


def test_2d_annotations_shapes_values_and_zeros_where_absent(out):
    dataset, report = build_posec3d(str(out.root), max_persons=None)
    anns = by_dir(dataset)
    assert sorted(anns) == ["jump/a", "jump/b", "run/c"]
    for ann in anns.values():
        check_annotation(ann)
    a = anns["jump/a"]
    assert a["keypoint"].shape == (3, 10, 17, 2) and a["keypoint_score"].shape == (3, 10, 17)
    assert a["img_shape"] == a["original_shape"] == (240, 320) and a["total_frames"] == 10
    assert anns["run/c"]["img_shape"] == (360, 640)
    # slot 1 is track 5, seen in frames 2-4 and 7-8 only
    i = out.index["jump/a.mp4"]
    np.testing.assert_array_equal(a["keypoint"][1, 7], expected_keypoints(i, 5, 7))
    np.testing.assert_array_equal(a["keypoint_score"][1, 3], expected_scores(5, 3))
    absent = [0, 1, 5, 6, 9]
    assert not a["keypoint"][1, absent].any() and not a["keypoint_score"][1, absent].any()
    # the unconfirmed (-1) detection in frame 5 is nobody's
    assert a["keypoint"].shape[0] == 3


def test_persons_are_ranked_by_frames_times_mean_box_score_and_capped(out):
    dataset, report = build_posec3d(str(out.root), max_persons=2)
    a = by_dir(dataset)["jump/a"]
    i = out.index["jump/a.mp4"]
    assert a["keypoint"].shape[0] == 2
    np.testing.assert_array_equal(a["keypoint"][0, 0], expected_keypoints(i, 3, 0))   # 10 x 0.9
    np.testing.assert_array_equal(a["keypoint"][1, 2], expected_keypoints(i, 5, 2))   # 5 x 0.8 beats 10 x 0.3
    assert report.dropped_tracks == 1 and report.persons["jump/a.mp4"] == 2


def test_rank_ties_go_to_the_smaller_track_id():
    ids, rank = rank_tracks(np.array([4, 4, 2, 2]), np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5]))
    assert ids.tolist() == [2, 4] and rank.tolist() == [1.0, 1.0]


def test_failed_and_empty_videos_are_reported_not_silently_dropped(out):
    _, report = build_posec3d(str(out.root))
    reasons = {s.video_id: s.reason for s in report.skipped}
    assert set(reasons) == {"run/broken.mp4", "run/empty.mov"}
    assert reasons["run/broken.mp4"].startswith("failed in the job: not a readable video")
    assert reasons["run/empty.mov"] == "no person detected in any frame"
    assert report.num_videos == 5 and len(report.exported) == 3


# ---------------------------------------------------------------- labels


def test_labels_from_parent_folders(out):
    dataset, report = build_posec3d(str(out.root))
    assert report.label_names == ["jump", "run"]
    assert {d: a["label"] for d, a in by_dir(dataset).items()} == {"jump/a": 0, "jump/b": 0, "run/c": 1}


def test_labels_from_csv_names_ids_without_extension_and_missing_ones(out, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("video_id,label\njump/a.mp4,zebra\njump/b,apple\nnot/there.mp4,zebra\n")
    dataset, report = build_posec3d(str(out.root), labels=read_csv_mapping(csv, "label"))
    assert report.label_names == ["apple", "zebra"]
    assert {d: a["label"] for d, a in by_dir(dataset).items()} == {"jump/a": 1, "jump/b": 0}
    assert {s.video_id: s.reason for s in report.skipped}["run/c.mp4"] == "not in the labels CSV"
    assert report.unmatched == {"labels": ["not/there.mp4"]}


def test_integer_labels_are_their_own_index(out):
    dataset, report = build_posec3d(str(out.root), labels={"jump/a.mp4": 3, "jump/b.mp4": "0", "run/c.mp4": 1})
    assert {d: a["label"] for d, a in by_dir(dataset).items()} == {"jump/a": 3, "jump/b": 0, "run/c": 1}
    assert report.label_names == ["0", "1", "2", "3"]


def test_label_options_are_checked(out):
    with pytest.raises(ExportError, match="needs labels"):
        build_posec3d(str(out.root), label_from="csv")
    with pytest.raises(ExportError, match="kind"):
        build_posec3d(str(out.root), kind="4d")  # type: ignore[arg-type]


# ---------------------------------------------------------------- splits


def many_videos() -> list[FakeVideo]:
    return [FakeVideo(f"{cls}/{cls}{i:02d}.mp4", 3, tracks={0: [0, 1, 2]}) for cls in ("jump", "run") for i in range(10)]


def test_split_by_ratio_is_stratified_and_deterministic(tmp_path):
    spec = fake_output(tmp_path / "out", many_videos(), junk=False)
    ratio = parse_split_ratio("train=0.8,val=0.2")
    first, report = build_posec3d(str(spec.root), ratio=ratio, seed=1)
    again, _ = build_posec3d(str(spec.root), ratio=ratio, seed=1)
    other, _ = build_posec3d(str(spec.root), ratio=ratio, seed=2)
    assert first["split"] == again["split"]
    assert first["split"] != other["split"]
    assert report.split_sizes == {"train": 16, "val": 4}
    assert sorted(first["split"]["train"] + first["split"]["val"]) == sorted(a["frame_dir"] for a in first["annotations"])
    assert sum(d.startswith("jump/") for d in first["split"]["val"]) == 2  # 20% of each class


def test_split_from_csv_and_videos_it_lacks(out, tmp_path):
    csv = tmp_path / "splits.csv"
    csv.write_text("jump/a.mp4,train\njump/b.mp4,val\n")  # no header, run/c missing
    dataset, report = build_posec3d(str(out.root), split=read_csv_mapping(csv, "split"))
    assert dataset["split"] == {"train": ["jump/a"], "val": ["jump/b"]}
    assert {s.video_id: s.reason for s in report.skipped}["run/c.mp4"] == "not in the splits CSV"


def test_without_split_options_every_video_is_in_one_split(out):
    dataset, _ = build_posec3d(str(out.root))
    assert dataset["split"] == {"all": ["jump/a", "jump/b", "run/c"]}


@pytest.mark.parametrize("text", ["train=0.8,val=0.3", "train", "train=-1,val=2", "a=0.5,a=0.5", ""])
def test_bad_split_ratios_are_refused(text):
    with pytest.raises(ExportError, match="--split-ratio"):
        parse_split_ratio(text)


# ---------------------------------------------------------------- 3D


def pelvis_in_camera(video_index: int, track: int, frame: int, width: int = 320, height: int = 240) -> np.ndarray:
    """Written independently of pipeline.downstream.camera: CLIFF's cam_crop2full with f = the image diagonal."""
    x1, y1, x2, y2 = expected_bbox(video_index, track, frame).astype(np.float64)
    s, tx, ty = expected_camera(track, frame).astype(np.float64)
    b = max(x2 - x1, y2 - y1)
    f = (width ** 2 + height ** 2) ** 0.5
    return np.array([tx + 2 * ((x1 + x2) / 2 - width / 2) / (b * s), ty + 2 * ((y1 + y2) / 2 - height / 2) / (b * s), 2 * f / (b * s)])


def test_3d_kind_places_h36m_metres_in_the_camera_frame_and_omits_scores_by_default(out):
    dataset, report = build_posec3d(str(out.root), kind="3d")
    a = by_dir(dataset)["jump/a"]
    check_annotation(a)
    assert a["keypoint"].shape == (2, 10, 17, 3) and "keypoint_score" not in a  # M = 2 by default
    i = out.index["jump/a.mp4"]
    expected = expected_3d(i, 3, 1) + pelvis_in_camera(i, 3, 1)
    np.testing.assert_allclose(a["keypoint"][0, 1], expected, rtol=1e-6)
    assert a["keypoint"][0, 1, 0].tolist() != [0, 0, 0] and (a["keypoint"][0, 1, :, 2] > 1).all()  # no zero pelvis
    # bone lengths are the lifter's: placing the pelvis is a translation
    np.testing.assert_allclose(np.linalg.norm(a["keypoint"][0, 1, 1] - a["keypoint"][0, 1, 0]),
                               np.linalg.norm(expected_3d(i, 3, 1)[1] - expected_3d(i, 3, 1)[0]), rtol=1e-5)
    assert not a["keypoint"][0, 0].any()  # track 3 has no 3D in frame 0: all zeros, i.e. missing
    assert any("keypoint_score" in n for n in report.notes)
    # a known camera: depth scales with the focal length
    closer, _ = build_posec3d(str(out.root), kind="3d", focal=200.0)
    ratio = by_dir(closer)["jump/a"]["keypoint"][0, 1, 0, 2] / a["keypoint"][0, 1, 0, 2]
    assert ratio == pytest.approx(200.0 / 400.0, rel=1e-4)


def test_3d_scores_are_coco_confidences_mapped_to_h36m(out):
    dataset, _ = build_posec3d(str(out.root), kind="3d", with_3d_scores=True, max_persons=None)
    a = by_dir(dataset)["jump/a"]
    coco = expected_scores(3, 4)
    h36m = a["keypoint_score"][0, 4]
    assert h36m.shape == (17,)
    c = COCO17_NAMES.index
    h = H36M17_NAMES.index
    assert h36m[h("left_wrist")] == coco[c("left_wrist")]
    assert h36m[h("pelvis")] == pytest.approx((coco[c("left_hip")] + coco[c("right_hip")]) / 2)
    assert not a["keypoint_score"][0, 0].any()


def test_3d_skips_videos_without_any_3d(tmp_path):
    video = FakeVideo("jump/flat.mp4", 2, tracks={0: [0, 1]}, no_3d={(0, 0), (0, 1)})
    spec = fake_output(tmp_path / "out", [*default_videos()[:1], video], junk=False)
    _, report = build_posec3d(str(spec.root), kind="3d")
    assert {s.video_id: s.reason for s in report.skipped} == {"jump/flat.mp4": "no 3D keypoints (was the job run with the 3D lifter?)"}


# ---------------------------------------------------------------- files


def test_persons_default_to_two_and_the_report_counts_the_tracks_left_out(out):
    dataset, report = build_posec3d(str(out.root))
    assert max(a["keypoint"].shape[0] for a in dataset["annotations"]) == 2
    assert report.dropped_tracks == 1  # jump/a has three confirmed tracks
    assert "1 tracks beyond --max-persons left out" in "\n".join(report.summary_lines())
    _, everyone = build_posec3d(str(out.root), kind="3d", max_persons=None)
    assert any("at most 2" in n for n in everyone.notes)


def test_3d_export_writes_the_mmaction2_config_and_bone_transform_beside_the_pickle(out, tmp_path):
    from posepipe.models.skeletons import H36M17_PARENTS
    from posepipe.pipeline.downstream.export import write_mmaction_config

    dataset, report = build_posec3d(str(out.root), kind="3d", ratio={"train": 0.5, "val": 0.5})
    pkl, _ = write_posec3d(dataset, report, tmp_path / "ds3d.pkl")
    config, module = write_mmaction_config(report, pkl)
    assert config == tmp_path / "ds3d.mmaction2.py" and module == tmp_path / "posepipe_h36m.py"
    namespace: dict = {}
    exec(compile(config.read_text(), str(config), "exec"), namespace)  # plain Python, as mmengine reads it
    assert namespace["ann_file"] == "ds3d.pkl" and namespace["num_classes"] == 2
    assert namespace["h36m17_layout"]["num_node"] == 17 and len(namespace["h36m17_layout"]["inward"]) == 16
    assert namespace["pre_normalize_3d"] == {"type": "PreNormalize3D", "zaxis": [0, 7], "xaxis": [14, 11]}
    assert list(namespace["h36m17_bone_pairs"]) == [(j, max(p, 0)) for j, p in enumerate(H36M17_PARENTS)]
    assert namespace["train_dataloader"]["dataset"]["dataset"]["split"] == "train"
    assert namespace["val_dataloader"]["dataset"]["split"] == "val"
    compile(module.read_text(), str(module), "exec")
    dataset2d, report2d = build_posec3d(str(out.root))
    assert write_mmaction_config(report2d, tmp_path / "ds2d.pkl") == []


def test_written_pickle_loads_with_the_consumer_and_label_map_sits_beside(out, tmp_path):
    dataset, report = build_posec3d(str(out.root), ratio={"train": 0.5, "val": 0.5})
    pkl, labels = write_posec3d(dataset, report, tmp_path / "ds" / "dataset.pkl")
    raw = pkl.read_bytes()
    assert raw[:2] == b"\x80\x04"  # pickle protocol 4
    assert b"numpy._core" not in raw  # NumPy 1.x readers (mmaction2/PYSKL pins) cannot import it
    assert labels == tmp_path / "ds" / "dataset.labels.txt" and labels.read_text() == "jump\nrun\n"
    loaded = load_posec3d(pkl, "train") + load_posec3d(pkl, "val")
    assert sorted(a["frame_dir"] for a in loaded) == ["jump/a", "jump/b", "run/c"]
    assert [p.name for p in pkl.parent.iterdir() if p.name.startswith(".")] == []
    original = by_dir(dataset)
    for ann in loaded:
        np.testing.assert_array_equal(ann["keypoint"], original[ann["frame_dir"]]["keypoint"])
        assert ann["keypoint"].flags.writeable and ann["keypoint"].dtype == np.float32


def test_frame_dirs_stay_unique_when_only_the_extension_differs(tmp_path):
    videos = [FakeVideo("jump/x.mp4", 2, tracks={0: [0]}), FakeVideo("jump/x.avi", 2, tracks={0: [1]}),
              FakeVideo("jump/y.mp4", 2, tracks={0: [0]})]
    spec = fake_output(tmp_path / "out", videos, junk=False)
    dataset, _ = build_posec3d(str(spec.root))
    assert sorted(by_dir(dataset)) == ["jump/x.avi", "jump/x.mp4", "jump/y"]


# ---------------------------------------------------------------- S3


def test_export_reads_output_from_s3(out, s3_server):
    """A real moto server (tests/conftest.py) with AWS_ENDPOINT_URL in the environment, as a user's would be."""
    from tests.fake_output import upload_tree
    from tests.servers import make_bucket

    local, local_report = build_posec3d(str(out.root), max_persons=2)
    make_bucket(s3_server.endpoint_url, "export-results")
    upload_tree(out.root, s3_server.endpoint_url, "export-results", "runs/r1")
    remote, remote_report = build_posec3d("s3://export-results/runs/r1", max_persons=2)
    assert remote["split"] == local["split"]
    assert remote_report.skipped == local_report.skipped
    for a, b in zip(remote["annotations"], local["annotations"]):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
