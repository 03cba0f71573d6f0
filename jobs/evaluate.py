"""``posepipe eval OUTPUT --gt GT``: score a job's ``poses/`` against ground truth.

The ground truth formats and the matching rules: ``pydoc pipeline.downstream.evaluation``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import click

from posepipe.jobs.conventions import Command, quiet_option
from posepipe.jobs.progress import progress_bar
from posepipe.pipeline.io.redaction import redact
from posepipe.pipeline.run.terminal import console, plain

if TYPE_CHECKING:  # the scoring imports numpy, scipy and the skeletons (torch): loaded when eval runs
    from posepipe.pipeline.downstream.evaluation import Score

# pipeline.downstream.evaluation's names, here so `--help` needs no numerical library (a test keeps
# them equal to the module's).
METRICS_2D = ("pck", "pckh", "pcp", "pdj", "coco-ap")
METRICS_3D = ("mpjpe",)
THRESHOLD_METRICS = ("pck", "pckh", "pcp", "pdj")
DEFAULT_ALPHA = {"pck": 0.2, "pckh": 0.5, "pcp": 0.5, "pdj": 0.2}
GT_2D_SUFFIXES = (".json",)
GT_3D_SUFFIXES = (".parquet", ".csv", ".npz")
EVAL_EXIT_CODES = (
    (0, "scored (with --metric all, a metric that cannot be computed here is shown as not computed, saying why)"),
    (2, "a bad option or ground truth, OUTPUT that is not a posepipe OUTPUT, cannot be read or holds none of the GT's "
        "frames, or --metric coco-ap without pycocotools (pip install 'posepipe[eval]')"),
    (1, "an unexpected error"),
)


# --------------------------------------------------------------------------------------------
# The command


def _format(score: "Score") -> str:
    if not math.isfinite(score.value):
        return "n/a"
    return {"ratio": f"{100 * score.value:.1f} %", "ap": f"{score.value:.3f}", "mm": f"{score.value:.1f} mm"}[score.kind]


def _print_table(title: str, scores: Sequence["Score"], counts: dict[str, int]) -> None:
    """A rich table, rendered to lines and printed through `plain` (every cell a plain Text, so
    names from the user's files are never read as markup; box-drawing characters pass as they are)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(plain(title)))
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("setting")
    for score in scores:
        table.add_row(Text(plain(score.name)), Text(_format(score)), Text(plain(score.setting)))
    out = console(stderr=False)
    for line in out.render_lines(table, out.options, pad=False):
        click.echo(plain("".join(segment.text for segment in line).rstrip()))
    click.echo(plain(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items())))


def _score(output: str, gt_path: Path, is_3d: bool, metric: str, alphas: dict[str, float], norm: str,
           videos: Sequence[str], min_iou: float, unavailable: dict[str, str],
           progress: Callable[[int, int], None]) -> tuple[list["Score"], dict[str, int], list[str]]:
    """The scores; `progress(done, 4)` after each step: ground truth read, OUTPUT opened, predictions
    read, scored (pipeline.downstream.evaluation reports no finer steps)."""
    import numpy as np

    from posepipe.pipeline.downstream.evaluation import (Score, check_selection, evaluate_2d, evaluate_3d,
                                                         open_output, read_gt_2d, read_gt_3d, read_predictions)

    steps = 4
    if is_3d:
        gt3 = read_gt_3d(gt_path, videos)
        progress(1, steps)
        reader = open_output(output)
        check_selection(gt3.keys, reader, gt_path)
        progress(2, steps)
        pred = read_predictions(reader, {v for v, _ in gt3.keys}, need_2d=False, need_3d=True)
        progress(3, steps)
        scores, counts = evaluate_3d(gt3, pred, min_iou)
        selected = sorted({v for v, _ in gt3.keys})
    else:
        gt2 = read_gt_2d(gt_path, videos)
        progress(1, steps)
        reader = open_output(output)
        check_selection(gt2.keys, reader, gt_path)
        progress(2, steps)
        has_head = bool(np.isfinite(gt2.head_size).any())
        if metric == "pckh" and not has_head:
            raise click.UsageError(plain(f"--metric pckh needs head sizes: add 'head_size' (pixels) or 'head_bbox' "
                                         f"([x, y, w, h]) to the annotations of {gt_path.name}, or use --metric pck"))
        wanted = [m for m in METRICS_2D if (m != "pckh" or has_head) and m not in unavailable] if metric == "all" else [metric]
        selected = sorted({v for v, _ in gt2.image_ids})
        pred = read_predictions(reader, selected, need_2d=True, need_3d=False)
        progress(3, steps)
        scores, counts = evaluate_2d(gt2, pred, wanted, alphas, norm, min_iou)
        if metric == "all":  # said in the table itself, not only in a note that scrolls away
            scores += [Score(name, math.nan, "ap", f"not computed: {why}") for name, why in unavailable.items()]
    counts["videos_without_predictions"] = len(set(selected) - {v for v, _ in pred.keys})
    progress(steps, steps)
    return scores, counts, selected


@click.command("eval", cls=Command, exit_codes=EVAL_EXIT_CODES)
@click.argument("output")
@click.option("--gt", "gt_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ground truth: COCO keypoints .json (2D) or .parquet/.csv/.npz with keypoints_3d (3D).")
@click.option("--metric", type=click.Choice([*METRICS_2D, *METRICS_3D, "all"]), default="all",
              help="What to compute; 'mpjpe' reports MPJPE, P-MPJPE and N-MPJPE; 'all' = everything the GT allows.")
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Threshold of pck/pckh/pcp/pdj (defaults 0.2/0.5/0.5/0.2); with --metric all it sets all four.")
@click.option("--norm", type=click.Choice(["bbox", "torso"]), default="bbox",
              help="PCK normaliser: longer GT box side, or left shoulder to right hip distance.")
@click.option("--video", "videos", multiple=True, metavar="VIDEO_ID", help="Only this video (repeatable).")
@click.option("--min-iou", type=click.FloatRange(0, 1), default=0.5,
              help="Least box IoU for pairing a prediction with a GT person.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@quiet_option
def eval_command(output: str, gt_path: Path, metric: str, alpha: float | None, norm: str,
                 videos: tuple[str, ...], min_iou: float, as_json: bool, quiet: bool) -> None:
    """Score OUTPUT/poses against ground truth GT.

    \b
    2D GT: COCO keypoints .json whose 'images' entries carry "video_id" and
      "frame_index" (the poses/ frame they are); optional per-annotation
      "head_size" (px) or "head_bbox" [x, y, w, h] for PCKh.
    3D GT: .parquet/.npz with video_id, frame_index, keypoints_3d (17 x 3,
      H36M-17, metres), optional track_id, bbox_xyxy; .csv with pelvis_x ...
      right_wrist_z and bbox_x1 ... bbox_y2 columns. Errors are printed in mm.

    Persons are paired within each frame by box IoU (Hungarian). Full format
    notes: `pydoc pipeline.downstream.evaluation`.

    \b
    COCO AP needs pycocotools (pip install 'posepipe[eval]'): without it,
    --metric coco-ap stops with exit code 2; --metric all computes the
    other metrics and shows coco-ap as not computed, saying why.
    """
    from posepipe.pipeline.downstream.evaluation import EvalInputError
    from posepipe.pipeline.downstream.metrics import pycocotools_problem

    suffix = gt_path.suffix.lower()
    if suffix not in GT_2D_SUFFIXES + GT_3D_SUFFIXES:
        raise click.BadParameter(plain(f"{gt_path.name}: use a COCO keypoints .json (2D) or a .parquet, .csv or .npz "
                                       "with keypoints_3d (3D)"), param_hint="'--gt'")
    is_3d = suffix in GT_3D_SUFFIXES
    if is_3d and metric in METRICS_2D:
        raise click.UsageError(plain(f"--metric {metric} scores 2D keypoints and {gt_path.name} is 3D ground truth; "
                                     "pass a COCO keypoints .json as --gt, or use --metric mpjpe"))
    if not is_3d and metric in METRICS_3D:
        raise click.UsageError(f"--metric {metric} needs 3D ground truth; pass a .parquet, .csv or .npz with "
                               "keypoints_3d as --gt, or pick a 2D metric")
    if alpha is not None and (is_3d or metric == "coco-ap"):
        raise click.UsageError(f"--alpha only applies to {', '.join(THRESHOLD_METRICS)}; drop it for "
                               f"--metric {metric} with this ground truth")
    alphas = {m: alpha if alpha is not None else a for m, a in DEFAULT_ALPHA.items()}
    # pycocotools is optional (posepipe[eval]): asked for by name, its absence is an error before any
    # work; under 'all' the other metrics are computed and the table says why COCO AP is not.
    unavailable: dict[str, str] = {}
    if not is_3d and metric in ("coco-ap", "all"):
        problem = pycocotools_problem()
        if problem is not None and metric == "coco-ap":
            raise click.BadParameter(plain(problem), param_hint="'--metric'")
        if problem is not None:
            unavailable["coco-ap"] = problem

    try:
        with progress_bar("eval", quiet=quiet) as report_progress:
            scores, counts, selected = _score(output, gt_path, is_3d, metric, alphas, norm, videos, min_iou, unavailable,
                                              report_progress)
    except EvalInputError as exc:
        raise click.BadParameter(plain(exc), param_hint=f"'{exc.option}'") from None
    for why in unavailable.values():  # a warning: said under --quiet too
        click.echo(plain(f"note: {why}"), err=True)

    if as_json:
        report = {"output": redact(output), "gt": str(gt_path), "ground_truth": "3d" if is_3d else "2d",
                  "videos": selected,
                  "metrics": {s.name: (s.value if math.isfinite(s.value) else None) for s in scores},
                  "settings": {s.name: s.setting for s in scores}, "counts": counts,
                  "not_computed": unavailable}
        click.echo(json.dumps(report, indent=2, ensure_ascii=True))  # JSON escapes every control character
    else:
        _print_table(f"posepipe eval: {redact(output)} vs {gt_path.name}", scores, counts)
