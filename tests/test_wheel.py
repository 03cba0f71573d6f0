"""The package as a user installs it: a wheel built from this tree, installed into a fresh venv outside
any checkout, runs `posepipe --help` and `posepipe demo` there.

The venv gets the wheel only (`--no-deps`); the test venv's site-packages are made visible to it by a
`.pth` line, so CI downloads nothing (no second torch) and the dependencies are the versions the suite
resolved. The check that matters: nothing is read from this checkout. The wheel is built from a copy
of the package's files, the commands run in an empty folder with no PYTHONPATH, and `posepipe` must
import from the new venv (the test venv's editable install is not activated: a `.pth` line adds a
folder to the path but runs none of the `.pth` files in it).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.processes import REPO, Spawner, posepipe_env

PACKAGE_FILES = ("pyproject.toml", "README.md", "jobs", "models", "pipeline", "samples")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in PACKAGE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = dist.glob("posepipe-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                                "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "zz_test_venv.pth").write_text("".join(f"{p}\n" for p in ours))
    return root


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = posepipe_env(POSEPIPE_CACHE=str(tmp_path / "cache"), **extra)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "POSEPIPE_CONFIG"):
        env.pop(name, None)
    return env


def test_the_wheel_holds_the_package_and_the_sample_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "posepipe/samples/street.mp4" in names
    for module in ("posepipe/jobs/cli.py", "posepipe/models/__init__.py", "posepipe/pipeline/run/runner.py",
                   "posepipe/pipeline/downstream/plumbing.py"):
        assert module in names, module
    assert not [n for n in names if n.startswith(("tests/", "posepipe/tests/", "infra/")) or "__pycache__" in n]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Provides-Extra: eval" in metadata and "Requires-Dist: requests" in metadata


def test_help_and_dependencies_in_a_fresh_venv(venv, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    python, cli = venv / "bin" / "python", venv / "bin" / "posepipe"
    where = subprocess.run([str(python), "-c", "import posepipe.jobs.cli as c, posepipe.samples as s; print(c.__file__); "
                            "print(list(s.__path__)[0])"], cwd=cwd, env=clean_env(tmp_path), capture_output=True,
                           text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(venv.resolve()), (line, "imported from outside the new venv")
    # Every requirement the wheel declares (for this Python and platform) is met by what the venv sees.
    check = subprocess.run([str(python), "-c", UNMET], cwd=cwd, env=clean_env(tmp_path), capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0 and json.loads(check.stdout) == [], check.stdout + check.stderr
    shown = subprocess.run([str(cli), "--help"], cwd=cwd, env=clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for command in ("run", "demo", "export", "render", "eval", "files", "weights", "bench", "submit"):
        assert f"  {command} " in shown.stdout, command
    assert "Exit codes" in shown.stdout


UNMET = """
import json
from importlib.metadata import distribution, version, PackageNotFoundError
from packaging.requirements import Requirement
unmet = []
for text in distribution("posepipe").requires or []:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        found = version(req.name)
    except PackageNotFoundError:
        unmet.append(f"{req}: not installed")
        continue
    if not req.specifier.contains(found, prereleases=True):
        unmet.append(f"{req}: {found}")
print(json.dumps(unmet))
"""


def test_demo_runs_from_the_wheel_outside_any_checkout(venv, tmp_path):
    """The bundled sample comes from the wheel; offline, the demo is a labelled plumbing run (here asked
    for directly with --random-weights, so the test never downloads; one person, no flip: tiny)."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    spawner = Spawner()  # ends whatever the demo's Ray leaves in its session
    stdout, stderr = tmp_path / "demo.out", tmp_path / "demo.err"
    try:
        with open(stdout, "wb") as out_file, open(stderr, "wb") as err_file:
            proc = subprocess.Popen([str(venv / "bin" / "posepipe"), "demo", "--random-weights", "--max-persons", "1",
                                     "--no-flip-test", "--json"], cwd=cwd, env=clean_env(tmp_path), stdout=out_file,
                                    stderr=err_file, stdin=subprocess.DEVNULL, start_new_session=True)
        spawner.sessions.append(proc.pid)
        proc.wait(timeout=300)
    finally:
        spawner.cleanup()
    said = stderr.read_text(errors="replace")
    assert proc.returncode == 0, said[-4000:]
    assert "PLUMBING RUN" in said
    summary = json.loads(stdout.read_text())
    assert summary["ok"] == 1 and summary["plumbing_run_random_weights"] is True, summary
    out = cwd / "out" / "demo"   # the demo's default --output, relative to where it ran
    videos = pq.read_table(out / "videos")
    assert videos.column("video_id").to_pylist() == ["street.mp4"]
    assert "/site-packages/posepipe/samples/street.mp4" in videos.column("uri")[0].as_py()
    assert (out / "_committed.parquet").is_file()
