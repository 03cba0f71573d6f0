"""What a device call carries, and whether it fits: the working tree that travels (tracked files and
untracked files git does not ignore, and a shared/ folder in the checkout) plus the `carry` paths,
against the device tool's 64 MiB. prepare.sh runs it last; run it again just before the call if the
tree has changed since (another helper's files travel too).

    python3 infra/gpu/travel.py [--carry .gpu] [--limit-mib 64]      exit 1 when over, with the biggest items
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

LIMIT_MIB = 64.0


def tree_files(root: Path) -> list[Path]:
    """The files git would send: tracked, and untracked but not ignored (as the device tool copies)."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    files = {root / name for name in listed if name}
    shared = root / "shared"
    if shared.is_dir():
        files.update(p for p in shared.rglob("*") if p.is_file())
    return sorted(p for p in files if p.is_file() and not p.is_symlink())


def carried_files(root: Path, carry: list[str]) -> list[Path]:
    out: list[Path] = []
    for name in carry:
        path = root / name
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out.extend(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return out


def travel_size(root: Path, carry: list[str]) -> dict:
    tree, carried = tree_files(root), carried_files(root, carry)
    sizes = {p: p.stat().st_size for p in {*tree, *carried}}
    total = sum(sizes.values())
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
    return {"tree_bytes": sum(sizes[p] for p in tree), "carry_bytes": sum(sizes[p] for p in carried if p not in tree),
            "total_bytes": total, "files": len(sizes),
            "biggest": [(str(p.relative_to(root)), n) for p, n in biggest]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--carry", action="append", default=None, help="a carried path (repeatable; default .gpu)")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    args = parser.parse_args()
    report = travel_size(args.root, args.carry if args.carry is not None else [".gpu"])
    mib = report["total_bytes"] / 2**20
    print(f"travels: {mib:.1f} MiB of {args.limit_mib:.0f} (tree {report['tree_bytes'] / 2**20:.1f} MiB, "
          f"carried {report['carry_bytes'] / 2**20:.1f} MiB, {report['files']} files)")
    if mib > args.limit_mib:
        print(f"OVER the device tool's {args.limit_mib:.0f} MiB by {mib - args.limit_mib:.1f} MiB; the biggest:", file=sys.stderr)
        for name, size in report["biggest"]:
            print(f"  {size / 2**20:8.2f} MiB  {name}", file=sys.stderr)
        print("Ignore or remove what need not travel (untracked files count unless git ignores them), "
              "or carry less (infra/gpu/prepare.sh's list).", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
