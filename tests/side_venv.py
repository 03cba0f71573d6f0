"""Venvs of their own for third-party references that must not enter the project's venv.

An independent implementation (supervision's ByteTrack, mmaction2, a pinned OpenCV 4) often needs
other versions of what posepipe itself depends on. Each gets a venv in the repository root, made once
from PyPI and reused while its requirements are unchanged; a test is skipped only when PyPI cannot be
reached and the venv was never built.
"""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def side_python(folder: str, requirements: list[str], *, what: str) -> Path:
    """The python of ``ROOT/folder``, (re)built with `requirements` when they changed."""
    venv = ROOT / folder
    python = venv / "bin" / "python"
    stamp = venv / "posepipe-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15).close()
    except OSError:
        pytest.skip(f"PyPI is not reachable and {folder} was never built: cannot install {what}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True, timeout=900)
    stamp.write_text(wanted)
    return python


def clean_env() -> dict[str, str]:
    """This process's environment without what would make another venv's python use ours."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
