"""The installed package: a research repo's own `models/`, `pipeline/` or `jobs/` cannot shadow ours.

ML code is often run from a repository root that has a `models/` folder; before posepipe installed
under its own namespace, such a folder first on sys.path broke the CLI with an ImportError far from
the cause. These run the real console script in a fresh process with decoys first on the path.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import media

REPO = Path(__file__).resolve().parents[1]
POSEPIPE = str(Path(sys.executable).with_name("posepipe"))


def decoys(folder: Path) -> Path:
    """`models`, `pipeline` and `jobs` packages that fail loudly when imported."""
    for name in ("models", "pipeline", "jobs"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('the decoy {name} package was imported')\n")
    return folder


def shadowed_env(decoy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(decoy), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_cli_works_with_decoy_packages_first_on_the_path(tmp_path):
    decoy = decoys(tmp_path / "research-repo")
    # The decoys really are what a plain `import models` finds in this environment...
    probe = subprocess.run([sys.executable, "-c", "import models"], cwd=decoy, env=shadowed_env(decoy),
                           capture_output=True, text=True)
    assert "the decoy models package was imported" in probe.stderr
    # ...and posepipe does not care.
    result = subprocess.run([POSEPIPE, "weights", "list", "--json"], cwd=decoy, env=shadowed_env(decoy),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert any(w["name"] == "hrnet_w32_coco_256x192" for w in json.loads(result.stdout))


@pytest.mark.slow
def test_a_job_runs_from_a_folder_with_decoys(tmp_path):
    """Driver and Ray workers (which get the driver's working folder on their path) both import ours."""
    decoy = decoys(tmp_path / "research-repo")
    media.street_clip(tmp_path / "videos" / "walk.mp4", n=6)
    result = subprocess.run([POSEPIPE, "run", str(tmp_path / "videos"), "--output", str(tmp_path / "out"),
                             "--random-weights", "--max-persons", "1", "--no-flip-test", "--shard-frames", "6",
                             "--num-workers", "1", "--json"],
                            cwd=decoy, env=shadowed_env(decoy), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ok"] == 1 and summary["failed"] == 0, summary


def test_jobs_modules_import_no_circle():
    """Each command module stands alone: none imports the command group (jobs/cli.py) back."""
    for path in sorted((REPO / "jobs").glob("*.py")):
        if path.name == "cli.py":
            continue
        imported = {node.module for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module}
        assert "posepipe.jobs.cli" not in imported, f"{path.name} imports posepipe.jobs.cli"
        result = subprocess.run([sys.executable, "-c", f"import posepipe.jobs.{path.stem}"], capture_output=True, text=True)
        assert result.returncode == 0, (path.name, result.stderr[-2000:])


# ---------------------------------------------------------------------------------------------
# Every import is declared

# Import names that are not their distribution's name (namespace packages by their full name).
DISTRIBUTION_OF = {"cv2": "opencv-python-headless", "PIL": "pillow", "smart_open": "smart-open", "yaml": "pyyaml",
                   "google.cloud": "google-cloud-storage", "azure.storage.blob": "azure-storage-blob",
                   "azure.identity": "azure-identity"}


def _distribution(module: str) -> str:
    for name in sorted(DISTRIBUTION_OF, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return DISTRIBUTION_OF[name]
    return module.split(".")[0].replace("_", "-").lower()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at import time) for each absolute import of a file: at import time means a statement of
    the module's own body (not inside a function, class or `try`/`if TYPE_CHECKING`)."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in top))
    return found


def _declared() -> tuple[set[str], set[str]]:
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extras = {canonicalize_name(Requirement(r).name) for reqs in project["optional-dependencies"].values() for r in reqs}
    return core, extras


def test_every_import_of_the_package_is_a_declared_dependency():
    """What jobs/, pipeline/ and models/ import is in pyproject: a module imported when posepipe loads in
    the core dependencies, one imported inside a function (an optional feature) at least in an extra."""
    from packaging.utils import canonicalize_name

    core, extras = _declared()
    problems = []
    for package in ("jobs", "pipeline", "models"):
        for path in sorted((REPO / package).rglob("*.py")):
            for module, at_import in _imports(path):
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("posepipe", "__future__"):
                    continue
                if top == "tomli":  # tomllib's backport, declared for Python < 3.11
                    continue
                dist = canonicalize_name(_distribution(module))
                if at_import and dist not in core:
                    problems.append(f"{path.relative_to(REPO)}: imports {module} when loaded, and {dist} is no core dependency")
                elif dist not in core | extras:
                    problems.append(f"{path.relative_to(REPO)}: imports {module} ({dist}), declared nowhere in pyproject.toml")
    assert not problems, "\n".join(problems)


def test_the_rule_finds_an_undeclared_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import requests\nimport leftpad_xyz\n\ndef f():\n    import decord\n    from google.cloud import storage\n")
    core, extras = _declared()
    found = {_distribution(m): at for m, at in _imports(module)}
    assert found == {"requests": True, "leftpad-xyz": True, "decord": False, "google-cloud-storage": False}
    assert "requests" in core and "leftpad-xyz" not in core | extras and {"decord", "google-cloud-storage"} <= extras
