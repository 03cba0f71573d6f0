"""The README's query examples are tests: run them against a real job's output."""
from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from posepipe.jobs.cli import main
from tests import media

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.slow


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def output(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    media.street_clip(root / "in" / "walking" / "clip01.mp4", n=6)
    (root / "in" / "broken.mp4").write_text("not a video")
    out = root / "out"
    result = CliRunner().invoke(main, ["run", str(root / "in"), "--output", str(out), "--random-weights",
                                       "--max-persons", "2", "--no-flip-test"])
    assert result.exit_code == 3, result.output
    return out


def test_readme_has_both_quickstart_commands_and_ci_uses_the_test_one():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"


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
