"""The CLI's habits (issue 24), through the real `posepipe` command group: one spelling per idea with
the old ones still parsing, --quiet, defaults from a TOML config and POSEPIPE_* variables, defaults and
exit codes in --help, a --help that loads no model library, and progress bars only on a terminal.

The commands run on small OUTPUTs written by the real writer (tests/fake_output.py), in process
through click's CliRunner, or as a subprocess where what matters is the process (imports, a pty).
"""
from __future__ import annotations

import json
import os
import pickle
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import av
import click
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from posepipe.jobs.cli import main
from tests.fake_output import FakeVideo, fake_output
from tests.jobs.test_hostile_outputs import smpl_output
from tests.processes import posepipe_argv, posepipe_env

WIDTH, HEIGHT, FRAMES, FPS = 161, 121, 12, 10.0   # odd on purpose: H.264 4:2:0 needs even sizes
HEAVY = ("torch", "scipy", "ray", "pyarrow", "numpy", "cv2", "av", "pandas", "duckdb")


def cli(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def odd_sized_clip(path: Path, background: int = 90) -> Path:
    """A lossless FFV1 clip of WIDTH x HEIGHT (odd: no 4:2:0 codec writes that), frame i flat grey background + i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv444p"
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(np.full((HEIGHT, WIDTH, 3), background + i, np.uint8), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture()
def out(tmp_path):
    source = odd_sized_clip(tmp_path / "in" / "jump" / "a.mkv")
    videos = [FakeVideo("jump/a.mp4", FRAMES, width=WIDTH, height=HEIGHT, fps=FPS, uri=str(source),
                        tracks={0: list(range(FRAMES)), 1: list(range(FRAMES))})]
    return fake_output(tmp_path / "out", videos, junk=False).root


def mark_plumbing(root: Path) -> None:
    """Rewrite OUTPUT's videos rows as a --random-weights run writes them (its provenance says so)."""
    for path in (root / "videos").glob("*.parquet"):
        table = pq.read_table(path)
        meta = dict(table.schema.metadata or {})
        meta[b"posepipe.provenance"] = json.dumps({"plumbing_run_random_weights": True}).encode()
        pq.write_table(table.replace_schema_metadata(meta), path)


# ----------------------------------------------------------------------------------------------
# --help: fast, complete, honest


def every_command() -> list[list[str]]:
    paths = []
    for name, command in main.commands.items():
        if isinstance(command, click.Group):
            paths += [[name, sub] for sub in command.commands]
        else:
            paths.append([name])
    return paths


def test_help_loads_no_model_or_data_library():
    """`posepipe --help` and every `posepipe CMD --help`, each in a fresh interpreter: none imports torch,
    scipy, Ray, pyarrow, numpy, OpenCV or PyAV (they took `--help` to 6-8 s)."""
    probe = ("import json, sys; from posepipe.jobs.cli import main\n"
             "try:\n    main(sys.argv[1:], prog_name='posepipe')\nexcept SystemExit:\n    pass\n"
             f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)")
    for path in [[], *every_command()]:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", probe, *path, "--help"], capture_output=True, text=True, timeout=60)
        seconds = time.perf_counter() - started
        assert done.returncode == 0 and "Usage: posepipe" in done.stdout, (path, done.stderr[-2000:])
        assert json.loads(done.stderr.strip().splitlines()[-1]) == [], (path, done.stderr)
        assert seconds < 20, (path, seconds)  # a generous bound on a loaded machine; it takes ~0.3 s


@pytest.mark.parametrize("path", every_command(), ids=" ".join)
def test_every_command_states_its_defaults_and_exit_codes(path):
    result = CliRunner().invoke(main, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Exit codes:" in result.output and "\n    0 " in result.output, result.output
    command = main
    for name in path:
        command = command.commands[name]
    for param in command.params:
        unset = param.default is None or type(param.default).__name__ == "Sentinel"   # click 8.2+: UNSET
        if isinstance(param, click.Option) and not param.is_flag and not unset and not param.multiple \
                and param.show_default is not False:
            assert f"[default: {param.default}" in result.output or f"default: {param.default};" in result.output, \
                (path, param.name, result.output)
    assert "--config FILE" in result.output


def test_the_help_text_constants_are_the_modules_own():
    """What the command modules hold to stay light (exit codes, defaults, metric names) equals what the
    heavy modules define."""
    from posepipe.jobs import evaluate, export, run, weights
    from posepipe.pipeline.downstream import evaluation
    from posepipe.pipeline.downstream.export import DEFAULT_MAX_PERSONS
    from posepipe.pipeline.run import runner

    listed = {code for code, _ in run.RUN_EXIT_CODES}
    assert {runner.EXIT_USAGE, runner.EXIT_WEIGHTS, runner.EXIT_STORAGE, runner.EXIT_RAY_DIED, 0, 1, 3, 130} <= listed
    assert weights.EXIT_WEIGHTS == runner.EXIT_WEIGHTS
    assert export.DEFAULT_MAX_PERSONS == DEFAULT_MAX_PERSONS
    for name in ("METRICS_2D", "METRICS_3D", "THRESHOLD_METRICS", "DEFAULT_ALPHA", "GT_2D_SUFFIXES", "GT_3D_SUFFIXES"):
        assert getattr(evaluate, name) == getattr(evaluation, name), name


def test_version():
    result = cli("--version")
    assert result.exit_code == 0 and "version" in result.output


# ----------------------------------------------------------------------------------------------
# one spelling per idea; the old ones still parse, and say so


def test_old_out_spelling_renders_with_a_deprecation_notice(out, tmp_path):
    result = cli("render", out, "--video", "jump/a.mp4", "--out", tmp_path / "old.mp4")
    assert result.exit_code == 0, result.output
    assert "--out is deprecated" in result.stderr and "write --output" in result.stderr
    assert "deprecated" not in result.stdout and (tmp_path / "old.mp4").is_file()
    new = cli("render", out, "--video", "jump/a.mp4", "-o", tmp_path / "new.mp4")
    assert new.exit_code == 0 and "deprecated" not in new.output and (tmp_path / "new.mp4").is_file()
    equals = cli("export", "posec3d", out, f"--out={tmp_path / 'd.pkl'}")
    assert equals.exit_code == 0 and "--out is deprecated" in equals.stderr and (tmp_path / "d.pkl").is_file()


def test_files_json_and_its_old_spelling(out):
    new = cli("files", out, "--json")
    old = cli("files", out, "--format", "json")
    assert new.exit_code == old.exit_code == 0
    assert json.loads(new.stdout) == json.loads(old.stdout) and len(json.loads(new.stdout)) >= 1
    assert "deprecated" in old.stderr and "--json" in old.stderr and not new.stderr


def test_run_json_summary_is_json():
    context = main.commands["run"].make_context("run", ["in", "-o", "out", "--json-summary"])
    assert context.params["as_json"] is True
    refused = cli("run", "/nonexistent/videos", "-o", "/nonexistent/out", "--json-summary")
    assert "--json-summary is deprecated" in refused.stderr


def test_a_value_that_looks_like_an_old_option_after_double_dash_is_kept():
    from posepipe.jobs.conventions import respell

    assert respell(["a", "--out", "x", "--", "--out"], {"--out": "--output"}, "t") == ["a", "--output", "x", "--", "--out"]


# ----------------------------------------------------------------------------------------------
# defaults from a config file and the environment


def test_config_file_env_and_command_line_precedence(out, tmp_path):
    config = tmp_path / "posepipe.toml"
    config.write_text('[files]\nformat = "duckdb"\n')
    lines = cli("files", out)
    assert lines.exit_code == 0 and not lines.stdout.startswith("SELECT")
    for args, env in ((["--config", config, "files", out], None),          # the group's --config
                      (["files", out, "--config", config], None),          # the command's
                      (["files", out], {"POSEPIPE_CONFIG": str(config)}),   # $POSEPIPE_CONFIG
                      (["files", out], {"POSEPIPE_FILES_FORMAT": "duckdb"})):  # a POSEPIPE_<COMMAND>_<OPTION>
        result = cli(*args, env=env)
        assert result.exit_code == 0 and result.stdout.startswith("SELECT * FROM read_parquet(["), (args, env, result.output)
    # the environment beats the file, the command line beats both
    result = cli("files", out, "--config", config, env={"POSEPIPE_FILES_FORMAT": "lines"})
    assert result.exit_code == 0 and not result.stdout.startswith("SELECT")
    result = cli("files", out, "--format", "lines", env={"POSEPIPE_CONFIG": str(config)})
    assert result.exit_code == 0 and not result.stdout.startswith("SELECT")


def test_config_tables_for_nested_commands_and_lists(out, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[export.posec3d]\nmax-persons = 1\nkind = '3d'\n")
    result = cli("--config", config, "export", "posec3d", out, "-o", tmp_path / "d.pkl")
    assert result.exit_code == 0, result.output
    data = pickle.loads((tmp_path / "d.pkl").read_bytes())
    assert data["annotations"][0]["keypoint"].shape[0] == 1 and data["annotations"][0]["keypoint"].shape[-1] == 3
    assert (tmp_path / "d.mmaction2.py").is_file()  # --kind 3d's config came from the file


@pytest.mark.parametrize("text, message", [
    ("[rnu]\nmax-persons = 3\n", "posepipe has no command 'rnu'"),
    ("[run]\nmax-person = 3\n", "has no option --max-person"),
    ("[export.posec3]\nseed = 1\n", "has no command 'posec3'"),
    ("[run\n", "is not valid TOML"),
    ("[run]\nmax-persons = 'many'\n", "'many' is not a valid integer"),
])
def test_a_bad_config_is_exit_2_naming_the_problem(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = cli("--config", config, "run", tmp_path, "-o", tmp_path / "o")
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_submit_forwards_the_run_defaults_of_the_config_and_environment(tmp_path, monkeypatch):
    """The cluster has neither this file nor this environment: the job's `posepipe run` gets them as options."""
    from posepipe.jobs import submit

    config = tmp_path / "c.toml"
    config.write_text("[run]\ndet-conf = 0.4\nweights = ['yolox_s=/w/yolox_s.pth']\n")
    argv: list[list[str]] = []
    real = submit.run_argv
    monkeypatch.setattr(submit, "run_argv", lambda ctx: argv.append(real(ctx)) or argv[-1])

    def stop(address):  # noqa: ANN001, ANN202 - nothing leaves this machine
        raise submit.SubmitError("stopped before the network")

    monkeypatch.setattr(submit, "connect", stop)
    for where in ("before", "after"):   # the group's --config, or submit's own
        args = [tmp_path, "-o", tmp_path / "o", "--address", "http://127.0.0.1:1"]
        args = ["--config", config, "submit", *args] if where == "before" else ["submit", *args, "--config", config]
        result = cli(*args, env={"POSEPIPE_RUN_MAX_PERSONS": "3"})
        assert result.exit_code == 2 and "stopped before the network" in result.output, result.output
        words = argv[-1]
        assert words[words.index("--max-persons") + 1] == "3" and words[words.index("--det-conf") + 1] == "0.4", words
        assert words[words.index("--weights") + 1] == "yolox_s=/w/yolox_s.pth" and "--config" not in words


def test_one_config_file_serves_every_command(out, tmp_path):
    """A command given a file with no table of its own gets no defaults from it, and no error; a typo
    in any table is still found."""
    config = tmp_path / "all.toml"
    config.write_text("[run]\nmax-persons = 3\n[export.posec3d]\nmax-persons = 1\n")
    assert cli("files", out, "--config", config).exit_code == 0
    config.write_text("[run]\nmax-persons = 3\n[export.posec3d]\nmax-person = 1\n")
    result = cli("files", out, "--config", config)
    assert result.exit_code == 2 and "has no option --max-person" in result.output


# ----------------------------------------------------------------------------------------------
# outputs people can open; plumbing runs labelled


def test_render_writes_h264_that_browsers_play(out, tmp_path):
    result = cli("render", out, "--video", "jump/a.mp4", "-o", tmp_path / "o.mp4")
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'o.mp4'}: {FRAMES} frames, {WIDTH + 1}x{HEIGHT + 1}" in result.stdout and "h264" in result.stdout
    with av.open(str(tmp_path / "o.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (WIDTH + 1, HEIGHT + 1)
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
    assert len(frames) == FRAMES
    data = (tmp_path / "o.mp4").read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "the index must come first (+faststart)"
    # the padding is black, the picture kept: the source's background shows in the last column of the picture
    assert frames[3][:, WIDTH].max() < 40 and frames[3][:HEIGHT, WIDTH - 2].mean() > 40


def test_a_plumbing_run_renders_watermarked_and_exports_warned(out, tmp_path):
    clean = cli("render", out, "--video", "jump/a.mp4", "--frame", "4", "-o", tmp_path / "clean.png")
    mark_plumbing(out)
    marked = cli("render", out, "--video", "jump/a.mp4", "--frame", "4", "-o", tmp_path / "marked.png")
    assert clean.exit_code == marked.exit_code == 0
    assert "PLUMBING RUN" in marked.stderr and "PLUMBING" not in clean.output
    import cv2

    before, after = cv2.imread(str(tmp_path / "clean.png")), cv2.imread(str(tmp_path / "marked.png"))
    band = after[-12:]
    red = (band[..., 2] > 150) & (band[..., 1] < 100) & (band[..., 0] < 100)
    assert red.sum() > 30 and not np.array_equal(before[-12:], band)   # the note, in red, on the bottom band
    video = cli("render", out, "--video", "jump/a.mp4", "-o", tmp_path / "marked.mp4")
    assert video.exit_code == 0 and "PLUMBING RUN" in video.stderr
    with av.open(str(tmp_path / "marked.mp4")) as container:
        for image in (f.to_ndarray(format="bgr24") for f in container.decode(video=0)):
            assert ((image[-12:, :, 2] > 150) & (image[-12:, :, 1] < 100)).sum() > 10   # on every frame

    pickled = cli("export", "posec3d", out, "-o", tmp_path / "d.pkl")
    assert pickled.exit_code == 0 and "PLUMBING RUN" in pickled.stderr
    data = pickle.loads((tmp_path / "d.pkl").read_bytes())
    assert data["posepipe_plumbing_run"]["video_ids"] == ["jump/a.mp4"] and {"split", "annotations"} <= set(data)
    bvh = cli("export", "smpl", out, "-o", tmp_path / "bvh", "--format", "bvh", "--min-frames", "2")
    assert bvh.exit_code == 0 and "PLUMBING RUN" in bvh.stderr and "plumbing_run column" in bvh.stderr
    lines = (tmp_path / "bvh" / "tracks_bvh.csv").read_text().splitlines()
    assert lines[0].endswith(",plumbing_run") and len(lines) == 3 and all(line.endswith(",true") for line in lines[1:])

    with_smpl = smpl_output(tmp_path / "with_smpl", ["run/x.mp4"])
    clean = cli("export", "smpl", with_smpl, "-o", tmp_path / "clean_anim")
    mark_plumbing(with_smpl)
    smpl = cli("export", "smpl", with_smpl, "-o", tmp_path / "anim")
    assert clean.exit_code == smpl.exit_code == 0 and "PLUMBING RUN" in smpl.stderr and "PLUMBING" not in clean.output
    assert "PLUMBING RUN" in str(np.load(next((tmp_path / "anim").rglob("*.npz")))["plumbing_run"])
    assert "plumbing_run" not in np.load(next((tmp_path / "clean_anim").rglob("*.npz"))).files
    assert (tmp_path / "clean_anim" / "tracks_smpl.csv").read_text().splitlines()[0] == "video_id,track_id,file,frames,fps"


def test_quiet_prints_the_result_only(out, tmp_path):
    loud = cli("export", "posec3d", out, "-o", tmp_path / "a.pkl")
    quiet = cli("export", "posec3d", out, "-o", tmp_path / "b.pkl", "-q")
    assert loud.exit_code == quiet.exit_code == 0
    assert "videos exported" in loud.stdout and "videos exported" not in quiet.stdout
    assert "wrote" in quiet.stdout and not quiet.stderr


# ----------------------------------------------------------------------------------------------
# progress: on a terminal, never in a log


def _run_with_stderr_on_a_pty(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=follower, stdin=subprocess.DEVNULL, env=env)
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return proc.wait(timeout=60), seen.decode(errors="replace")


def test_render_progress_is_drawn_on_a_terminal_and_not_in_a_pipe(out, tmp_path):
    argv = posepipe_argv("render", str(out), "--video", "jump/a.mp4", "-o", str(tmp_path / "tty.mp4"))
    env = posepipe_env(TERM="xterm", COLUMNS="120")
    code, drawn = _run_with_stderr_on_a_pty(argv, env)
    assert code == 0, drawn
    assert "render jump/a.mp4" in drawn and "eta" in drawn and f"/{FRAMES}" in drawn, drawn
    piped = subprocess.run(posepipe_argv("render", str(out), "--video", "jump/a.mp4", "-o", str(tmp_path / "pipe.mp4")),
                           env=env, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    code, drawn = _run_with_stderr_on_a_pty([*argv[:-1], str(tmp_path / "q.mp4"), "--quiet"], env)
    assert code == 0 and "eta" not in drawn, drawn
