"""The steps of infra/gpu/prepare.sh that are easier said in Python than in bash.

    python3 infra/gpu/carried.py drop-image WHEELS_DIR          remove wheels of what the image has (image.txt)
    python3 infra/gpu/carried.py slim SITE                      drop what the run never loads (Ray's Java, UI, libraries)
    python3 infra/gpu/carried.py cut SRC DST FRAMES             the first FRAMES frames of SRC, packets copied (PyAV)
    python3 infra/gpu/carried.py manifest GPU_DIR WHEELS FALLBACK   write GPU_DIR/MANIFEST.json
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Ray's parts that a local Ray running actors never loads: the Java worker (31 MB compressed), the
# dashboard's web UI, and the libraries on top of Core (Data, Train, Tune, Serve, RLlib, LLM).
RAY_UNUSED = ("ray/jars", "ray/dashboard/client/build", "ray/rllib", "ray/serve", "ray/data", "ray/llm", "ray/train",
              "ray/tune", "ray/air", "ray/workflow")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def wheel_name(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return canonical(name), version


def drop_image(wheels: Path) -> None:
    have = {canonical(n) for n in listed(HERE / "image.txt")}
    for whl in sorted(wheels.glob("*.whl")):
        if wheel_name(whl)[0] in have:
            whl.unlink()
            print(f"  not carried (the image has it): {whl.name}")


def slim(site: Path) -> None:
    for part in RAY_UNUSED:
        shutil.rmtree(site / part, ignore_errors=True)
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)


def cut(src: Path, dst: Path, frames: int) -> None:
    """The first `frames` frames of a video, its packets copied as they are (no re-encoding)."""
    import av

    with av.open(str(src)) as source, av.open(str(dst), "w", format=source.format.name.split(",")[0]) as out:
        stream = source.streams.video[0]
        copy = out.add_stream_from_template(stream)
        count = 0
        for packet in source.demux(stream):
            if packet.size == 0:
                continue
            if count >= frames:
                break
            packet.stream = copy
            out.mux(packet)
            count += 1


def manifest(gpu: Path, wheels: Path, fallback: Path) -> None:
    files = {str(p.relative_to(gpu)): p.stat().st_size for p in sorted(gpu.rglob("*")) if p.is_file() and p.name != "MANIFEST.json"}
    data = {"made": time.strftime("%Y-%m-%d %H:%M:%S %z"), "target": "CPython 3.12, manylinux x86-64",
            "carried": dict(sorted(wheel_name(w) for w in wheels.glob("*.whl"))),
            "fallback_if_missing": dict(sorted(wheel_name(w) for w in fallback.glob("*.whl"))),
            "slimmed": list(RAY_UNUSED) + ["ELF files stripped of symbols (strip --strip-unneeded)"],
            "files": files, "bytes": sum(files.values())}
    (gpu / "MANIFEST.json").write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    command, *rest = sys.argv[1:] or ["help"]
    if command == "drop-image":
        drop_image(Path(rest[0]))
    elif command == "slim":
        slim(Path(rest[0]))
    elif command == "cut":
        cut(Path(rest[0]), Path(rest[1]), int(rest[2]))
    elif command == "manifest":
        manifest(Path(rest[0]), Path(rest[1]), Path(rest[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
