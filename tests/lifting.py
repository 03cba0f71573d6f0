"""Checks that a job's 3D is its lifter's answer, placed at the pelvis: not a restatement of the worker.

The worker subtracts the pelvis from the lifter's output; asserting "joint 0 is zero" only says the
subtraction ran. Here each tracked person's 2D sequence, as written, goes through the same lifter
built here (random weights are seeded, so the workers built the same network), and the written 3D
must be that answer with the joint the lifter's skeleton names "pelvis" at the origin. A job that
zeroes the 3D, roots it at another joint, lifts another track's 2D, shifts frames or writes
unlifted numbers fails.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import duckdb
import numpy as np


def assert_3d_is_the_lifters(out: Path, lifter: str, *, flip_augment: bool = True) -> int:
    """Compare every tracked row's keypoints_3d under `out` with `lifter` run directly on the
    track's written 2D; returns the number of tracks checked (at least one, or it fails)."""
    from posepipe.models import get_weights, load_model

    names = get_weights(lifter).keypoint_names
    assert "pelvis" in names, f"{lifter} names no pelvis joint: {names}"
    pelvis = names.index("pelvis")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning
        model = load_model(lifter, random_weights=True, device="cpu", half=False)
    con = duckdb.connect()
    sizes = dict((r[0], r[1:]) for r in con.sql(
        f"SELECT video_id, width, height FROM read_parquet('{out}/videos/*.parquet') WHERE status = 'ok'").fetchall())
    rows = con.sql(f"SELECT video_id, track_id, frame_index, keypoints_2d, keypoints_3d "
                   f"FROM read_parquet('{out}/poses/**/*.parquet') WHERE track_id >= 0 "
                   f"ORDER BY video_id, track_id, frame_index").fetchall()
    tracks: dict[tuple[str, int], list[tuple]] = {}
    for video_id, track_id, frame, k2, k3 in rows:
        tracks.setdefault((video_id, track_id), []).append((frame, k2, k3))
    checked = 0
    for (video_id, track_id), members in tracks.items():
        frames = np.array([m[0] for m in members])
        if not (np.diff(frames) == 1).all():
            continue  # a track with gaps: the worker interpolates them; contiguous tracks suffice here
        seq = np.asarray([m[1] for m in members], np.float32)
        got = np.asarray([m[2] for m in members], np.float64)
        width, height = sizes[video_id]
        pred = model.lift_batch([seq], width, height, flip_augment=flip_augment)[0].astype(np.float64)
        want = pred - pred[:, pelvis:pelvis + 1, :]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4,
                                   err_msg=f"3D of track {track_id} of {video_id} is not {lifter}'s answer for its 2D")
        others = np.delete(got, pelvis, axis=1)
        assert np.abs(others).max() > 1e-3, f"track {track_id} of {video_id}: every joint sits at the pelvis"
        checked += 1
    assert checked, f"no contiguous track under {out} to check the 3D of: {len(tracks)} tracks"
    return checked
