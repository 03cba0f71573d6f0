"""The README (and the docs/ pages it sends readers to) is tested: its query examples run against a real job's output, every `posepipe` command
and flag it shows is one the CLI has (each command's `--help` parsed by click), the cheap commands run
as written on a real job's output, and its install lines agree with the Makefile and pyproject."""
from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import click
import duckdb
import pytest
from click.testing import CliRunner

from posepipe.jobs.cli import main
from tests import media

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# The README and the pages it sends readers to (docs/): every command, flag and query in them is checked.
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]


def docs_text() -> str:
    return "\n\n".join(page.read_text() for page in PAGES)
pytestmark = pytest.mark.slow

# Flags the README shows for other programs: pip, ray, the tracking comparison script, measure.sh.
OTHER_PROGRAMS = {"--index-url", "--seeds", "--table", "--plot", "--dashboard-host", "--head", "--dry-run"}
# Old spellings that still parse (jobs/conventions.py): the README may name them only as such.
DEPRECATED = {"--out", "--json-summary"}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", docs_text(), flags=re.S)


def readme_commands() -> list[str]:
    """Every `posepipe ...` command line the README shows: in bash blocks (continuation lines joined,
    comments dropped) and in inline code."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("posepipe "):
                found.append(" ".join(line.split()))
    for span in re.findall(r"`(posepipe [^`]+)`", docs_text()):
        found.append(" ".join(span.split()))
    return list(dict.fromkeys(found))


def command_of(line: str) -> tuple[list[str], click.Command]:
    """(the command path, the click command) a README line names."""
    words = line.split()[1:]
    path: list[str] = []
    command: click.Command = main
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        path.append(words[0])
        command = command.commands[words.pop(0)]
    return path, command


def options_of(command: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(getattr(param, "secondary_opts", []))
    return names


def flags_in(text: str) -> set[str]:
    return {flag.split("=")[0] for flag in re.findall(r"(?<![\w-])(--[a-zA-Z0-9][a-zA-Z0-9-]*|-[a-zA-Z](?![\w-]))", text)}


def every_option() -> set[str]:
    names: set[str] = set()

    def walk(command: click.Command) -> None:
        names.update(options_of(command))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(main)
    return names


# ------------------------------------------------------------------------------------------------
# the CLI the README shows exists


def test_readme_has_both_quickstart_commands_and_ci_uses_the_test_one():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"


@pytest.mark.parametrize("line", readme_commands())
def test_every_command_and_flag_the_readme_shows_is_the_clis(line):
    path, command = command_of(line)
    words = line.split()[1 + len(path):]
    if not path or isinstance(command, click.Group):   # `posepipe --help`, `posepipe COMMAND --help`, `posepipe export`
        assert all(w.startswith("-") or w == "COMMAND" for w in words), f"README: {line!r} names no posepipe command"
    allowed = options_of(command)
    if path == ["submit"]:  # RUN OPTIONS follow
        allowed |= options_of(main.commands["run"])
    unknown = sorted(flags_in(line) - allowed)
    assert not unknown, f"README: `{line}`: `posepipe {' '.join(path)}` has no {', '.join(unknown)}"
    assert not flags_in(line) & DEPRECATED, f"README: `{line}` uses an old spelling"
    shown = CliRunner().invoke(main, [*path, "--help"])
    assert shown.exit_code == 0, shown.output


def test_every_flag_in_the_readme_is_an_option_of_some_command():
    """Prose names options without a command (`--det-conf`, `--no-flip-test`): each is one posepipe has,
    or another program's the README shows; an old spelling only where the README says it is old."""
    known = every_option() | OTHER_PROGRAMS
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for flag in flags_in(line):
                if flag in DEPRECATED:
                    assert "deprecat" in line or "old spelling" in line or "replace" in line, (page.name, number, line)
                else:
                    assert flag in known or not flag.startswith("--"), \
                        f"{page.relative_to(REPO)} line {number}: {flag} is no posepipe option"


# ------------------------------------------------------------------------------------------------
# install lines: the Makefile and pyproject agree


def make_dry_run(tmp_path: Path, *args: str) -> list[list[str]]:
    done = subprocess.run(["make", "-n", "-B", "-C", str(REPO), *args, f"VENV={tmp_path / 'venv'}"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines() if " pip install " in line]


def torch_pip_line(lines: list[list[str]]) -> list[str]:
    (line,) = [words for words in lines if any(w.startswith("torch") for w in words)]
    return line[line.index("install") + 1:]


def test_the_readme_install_lines_and_the_makefile_agree(tmp_path):
    text = README.read_text()
    makes = [shlex.split(re.sub(r"\s+#.*$", "", line)) for block in blocks("bash") for line in block.splitlines()
             if line.startswith("make install")]
    assert makes, "the README shows no make install line"
    for words in makes:
        lines = make_dry_run(tmp_path, *words[1:])
        torch = torch_pip_line(lines)
        given = dict(w.split("=", 1) for w in words[2:] if "=" in w).get("TORCH")
        if given is not None:   # TORCH reaches pip as separate words: the index URL is an option, not a requirement
            assert torch[-len(shlex.split(given)):] == shlex.split(given), (words, torch)
        if "--index-url" in torch:
            assert torch[torch.index("--index-url") + 1].startswith("https://download.pytorch.org/whl/"), torch
    # `make install-gpu` is the line its comment spells out, and the CUDA build is the cluster image's
    gpu = re.search(r"make install-gpu\s+# = make install TORCH=\"([^\"]+)\"", text)
    assert gpu, "the README does not spell out what make install-gpu runs"
    assert torch_pip_line(make_dry_run(tmp_path, "install-gpu"))[-len(gpu.group(1).split()):] == gpu.group(1).split()
    pins = (REPO / "infra" / "requirements-gpu.txt").read_text()
    torch_pin = re.search(r"^torch==([\d.]+)\+(cu\d+)$", pins, flags=re.M)
    assert torch_pin and f"torch=={torch_pin.group(1)} --index-url https://download.pytorch.org/whl/{torch_pin.group(2)}" == gpu.group(1)
    assert f'pip install "torch=={torch_pin.group(1)}" --index-url https://download.pytorch.org/whl/{torch_pin.group(2)}' in text
    # CPU: PyTorch's CPU index, never a bare `pip install torch` from PyPI (the CUDA build)
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in text


def test_the_extras_the_readme_names_exist_and_pin_the_images_ray():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    text = README.read_text()
    named = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M)) & set(extras) | {
        e for group in re.findall(r'pip install "\.\[([\w,]+)\]"', text) for e in group.split(",")}
    assert {"eval", "bench", "gcs", "azure", "cluster"} <= named <= set(extras), named
    image_ray = re.search(r"^ray\[default\]==([\d.]+)$", (REPO / "infra" / "requirements-gpu.txt").read_text(), flags=re.M)
    assert image_ray and extras["cluster"] == [f"ray[default]=={image_ray.group(1)}"]
    assert f"ray[default]=={image_ray.group(1)}" in text


# ------------------------------------------------------------------------------------------------
# a real job's output: the queries, and the cheap commands as written


@pytest.fixture(scope="module")
def output(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    media.street_clip(root / "in" / "walking" / "clip01.mp4", n=6)
    media.street_clip(root / "in" / "street.mp4", n=6)    # at INPUT's top, as the demo's sample is
    (root / "in" / "broken.mp4").write_text("not a video")
    out = root / "out"
    result = CliRunner().invoke(main, ["run", str(root / "in"), "--output", str(out), "--random-weights",
                                       "--max-persons", "2", "--no-flip-test"])
    assert result.exit_code == 3, result.output
    return out


@pytest.mark.parametrize("index", range(len(blocks("sql"))))
def test_sql_examples(output, index):
    sql = blocks("sql")[index].replace("out/demo", str(output))
    rows = duckdb.sql(sql).fetchall()
    assert rows, sql


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples(output, index):
    code = blocks("python")[index].replace("out/demo", str(output))
    namespace: dict = {}
    exec(compile(code, f"README python block {index}", "exec"), namespace)


CHEAP = (["export", "posec3d"], ["export", "smpl"], ["render"], ["files"], ["weights", "list"])


def runnable(line: str, output: Path) -> list[str]:
    """A README command as it would be typed on `output`: optional parts ([...]) left out, the
    placeholders OUT and out/demo as the output; frame 42 and tracks of 10 frames as what the 6-frame
    clips have (frame 2, tracks of any length)."""
    line = line.replace("[--min-frames 10]", "--min-frames 1")
    line = re.sub(r"\[[^\]]*\]", " ", line).replace("--frame 42", "--frame 2")
    return [str(output) if word in ("OUT", "out/demo") else word for word in shlex.split(line)[1:]]


@pytest.mark.parametrize("line", [c for c in readme_commands()  # lines that run a command, not prose naming one
                                  if command_of(c)[0] in CHEAP and len(c.split()) > 1 + len(command_of(c)[0])])
def test_the_cheap_readme_commands_run_as_written(output, tmp_path, monkeypatch, line):
    monkeypatch.chdir(tmp_path)   # what they write (dataset.pkl, anim/, overlay.mp4) lands here
    result = CliRunner().invoke(main, runnable(line, output))
    assert result.exit_code == 0, (line, result.output)
    assert "deprecated" not in result.output
    if command_of(line)[0] == ["export", "posec3d"]:
        # the plumbing run's export says so; the top-level video got its folder's name as label
        assert "PLUMBING RUN" in result.stderr and "  street.mp4:" not in result.stderr, result.output
        assert (tmp_path / "dataset.labels.txt").read_text().split() == ["in", "walking"]
