"""The prepared GPU run (infra/gpu/measure.sh), dry: the same script on this CPU with tiny sizes, in
this venv with decord, Ray, smart-open and boto3 blocked from import as the GPU image lacks them.
Every section's JSON comes back (and nothing more than the device tool returns), a section killed
at its timeout says so and leaves the others, and the node section runs without Ray. The full run in
a Python 3.12 environment holding only the image's packages is `bash infra/gpu/dry_run.sh`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["0_env", "1_parity", "2_floors", "3_worker", "4_decode", "5_node"]
BLOCKED = ("decord", "ray", "smart_open", "boto3", "botocore")
# Light models and two-frame clips: the plumbing is the same as the GPU's, in well under a minute.
SMALL = ["detector=yolox_nano", "pose=rtmpose_t_coco_256x192", "windows=[2]", "clip_frames=2", "street_frames=2",
         "profile_frames=2", "decode_threads=[1]", "node_workers=[2]", "node_max_frames=2", "node_min_frames=2"]


def gpu_image_like_env(tmp_path: Path) -> dict[str, str]:
    """This venv's Python with the GPU image's missing packages made unimportable, in every process
    the run starts (a sitecustomize on PYTHONPATH), and nothing carried."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None  # `import name` raises ImportError, as on the GPU image\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSEPIPE_GPU", "OUT"))}
    env.update(PYTHON=sys.executable, OUT=str(tmp_path / "out"), POSEPIPE_GPU_CARRY=str(tmp_path / "nothing-carried"),
               PYTHONPATH=str(shim), TMPDIR=str(tmp_path))
    return env


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-dry-run")
    env = gpu_image_like_env(tmp)
    # 2_floors gets 2 seconds: it is killed importing torch, as a section that hangs on the GPU would be.
    args = [a for kv in SMALL for a in ("--set", kv)] + ["--timeout", "2_floors=2"]
    done = subprocess.run(["bash", "infra/gpu/measure.sh", "--dry-run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    out = Path(env["OUT"])
    sections = {name: json.loads((out / f"{name}.json").read_text()) for name in SECTIONS if (out / f"{name}.json").is_file()}
    return done, out, sections


def test_every_section_writes_its_json_and_a_cut_one_leaves_the_others(dry_run):
    done, out, sections = dry_run
    assert sorted(sections) == SECTIONS, f"{sorted(sections)}\n{done.stdout}\n{done.stderr[-3000:]}"
    # What comes back from the device tool: at most 8 files, none deeper than two folders.
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert files == sorted([f"{s}.json" for s in SECTIONS] + ["measure.log"]), files
    assert sections["2_floors"]["status"] == "timeout" and sections["2_floors"]["timeout_s"] == 2
    assert sections["2_floors"]["output_tail"] is not None
    for name in SECTIONS:
        if name != "2_floors":
            assert sections[name]["status"] == "ok", f"{name}: {json.dumps(sections[name], indent=1)[:3000]}"
    assert done.returncode == 1, "one section did not end ok: the run must say so"
    for name in SECTIONS:  # one line per section on the terminal (the device tool's output_tail)
        assert any(line.startswith(name) for line in done.stdout.splitlines()), done.stdout
    assert "===== 3_worker" in (out / "measure.log").read_text()


def test_the_gpu_image_s_missing_packages_are_missing_and_everything_else_measures(dry_run):
    _, _, s = dry_run
    env = s["0_env"]
    for name in ("ray", "decord", "smart-open", "boto3"):
        assert env["versions"][name] is None, env["versions"]
    assert env["versions"]["av"] and env["versions"]["torch"]
    assert all(isinstance(v, bool) for v in env["crop_probes"].values()), env["crop_probes"]
    assert env["nvdec"]["libnvcuvid"] in (True, False) and env["plan"]["dry_run"] is True

    parity = s["1_parity"]
    assert parity["tests"]["counts"].get("skipped", 0) > 0 and not parity["tests"]["counts"].get("failed")
    compare = parity["device_vs_reference"][0]
    assert compare["half"] is False and all(compare["same_rows_and_candidates"].values()), compare

    runs = s["3_worker"]["runs"]
    device = [r for r in runs if r["path"] == "device"]
    assert {r["clip"] for r in device} == {"h264_720p", "street"} and any(r["path"] == "reference" for r in runs)
    assert s["3_worker"]["clips"]["h264_720p"]["codec"] == "h264"
    for r in device:
        assert r["fps"] > 0 and r["host_cpu_ms_per_frame"] > 0 and r["frames"] == 2, r
        assert r["counted"]["launches_per_window"] > 0 and r["counted"]["stages"], r["counted"]
        assert r["fallback_windows"] == {} and r["windows"] == 1, r

    for r in s["4_decode"]["runs"]:
        assert r["pyav"]["fps"] > 0 and r["decord"] is None, r

    node = s["5_node"]
    assert node["mode"].startswith("processes: Ray unavailable"), node["mode"]
    row = node["processes"][0]
    assert row["workers"] == 2 and row["per_frame_fps_node"] > 0 and row["plan"]["threads"] >= 1, row
    assert node["finisher"]["fps"] > 0 and row["end_to_end_fps"] == min(row["per_frame_fps_node"], row["finish_capacity_fps"])


def test_what_travels_counts_untracked_files_and_carry_and_refuses_too_much(tmp_path):
    """The size check prepare.sh ends with: git's tracked and untracked-not-ignored files plus the
    carried folder, against the device tool's limit; over it, exit 1 naming the biggest files."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / ".gitignore").write_text("/.gpu/\nignored.bin\n")
    (repo / "tracked.txt").write_bytes(b"x" * 1000)
    subprocess.run([*git, "add", ".gitignore", "tracked.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "t"], check=True)
    (repo / "untracked.bin").write_bytes(b"u" * 2000)
    (repo / "ignored.bin").write_bytes(b"i" * 10**6)
    (repo / ".gpu").mkdir()
    (repo / ".gpu" / "site.tar.xz").write_bytes(b"c" * 3 * 2**20)
    sys.path.insert(0, str(ROOT / "infra" / "gpu"))
    try:
        from travel import travel_size
    finally:
        sys.path.remove(str(ROOT / "infra" / "gpu"))
    report = travel_size(repo, [".gpu"])
    assert report["carry_bytes"] == 3 * 2**20
    assert report["tree_bytes"] == 1000 + 2000 + len("/.gpu/\nignored.bin\n")  # the ignored megabyte stays home
    script = [sys.executable, str(ROOT / "infra" / "gpu" / "travel.py"), "--root", str(repo), "--carry", ".gpu"]
    fits = subprocess.run([*script, "--limit-mib", "4"], capture_output=True, text=True)
    assert fits.returncode == 0 and "travels: 3.0 MiB of 4" in fits.stdout, fits.stdout + fits.stderr
    over = subprocess.run([*script, "--limit-mib", "2"], capture_output=True, text=True)
    assert over.returncode == 1 and "OVER" in over.stderr and ".gpu/site.tar.xz" in over.stderr, over.stderr
