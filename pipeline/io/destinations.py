"""Where posepipe's commands write (run's OUTPUT, export's and render's --output), and how they account for it.

Three rules, one function each:

* **Never inside OUTPUT's own folders** (`refuse_inside_output`). A file of ours in ``videos/`` or
  ``poses/`` is read as a table by every reader of OUTPUT (and fails it); one in ``_index/`` or
  named like ``_committed.parquet`` is the store's. What is reserved is `pipeline.io.store.is_reserved_name`:
  ``videos``, ``poses`` and every top-level name starting with ``_`` or ``.``. Any other name at
  OUTPUT's top level is allowed (``OUTPUT/dataset.pkl``, ``OUTPUT/anim/``): no reader lists it
  and no job deletes it. The check follows symbolic links and compares the way a case-insensitive
  disk would (``OUTPUT/Videos/x`` is refused too), so a link or a capital letter does not get round it.
* **One file, one name** (`Claims`). Every path a command will write is claimed first, folded as
  a case-insensitive, normalisation-insensitive file system folds it (Unicode NFC, case folded);
  a second claim on a folded path is an error raised before anything is written over. Names are
  built to be distinct (`pipeline.io.store.video_key`: a readable stem and a hash of the whole
  id), so a claim that fails is a bug or a choice of ``--output`` that makes two outputs one.
* **Report what is on disk** (`count_on_disk`): after writing, the files that exist, each counted
  once however many of our paths lead to it (a disk that folded two names into one shows one file
  behind both; that is detected by the file's identity, not by its name).
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Iterable

from posepipe.pipeline.io.store import StorageError, Store, is_reserved_name


class DestinationError(ValueError):
    """A path the command would write is not allowed (inside OUTPUT's folders, written twice, an
    input file). `option` is the command-line option that chose it, or None when no option did."""

    def __init__(self, message: str, option: str | None = "--output") -> None:
        super().__init__(message)
        self.option = option


def fold(path: str | os.PathLike[str]) -> str:
    """`path` as a case-insensitive, normalisation-insensitive disk (APFS, NTFS, SMB) sees it."""
    return unicodedata.normalize("NFC", os.path.abspath(path)).casefold()


def _local_root(output_uri: str) -> Path | None:
    """OUTPUT's folder as the store reads it (a file:// URI decoded as the store decodes it); None
    for an object store or a URI the store refuses (the command refuses it elsewhere)."""
    try:
        store = Store(output_uri)
        return Path(store.path("")) if store.local else None
    except (ValueError, StorageError):
        return None


def refuse_inside_output(path: str | os.PathLike[str], output_uri: str, option: str = "--output") -> None:
    """`DestinationError` if `path` is, or lies in, one of OUTPUT's reserved top-level entries, or
    those of any other posepipe OUTPUT on its way (``render OUT1 --output OUT2/videos/o.mp4`` breaks OUT2).

    An object-store OUTPUT never holds a local path; a local one is compared after resolving
    links, by file identity where the folders exist (so case and links cannot hide them)."""
    # As written (a link named videos/ inside OUTPUT is still OUTPUT's videos/ to its readers) and
    # resolved (a link elsewhere that leads into OUTPUT's videos/).
    targets = (Path(os.path.abspath(Path(path).expanduser())), Path(path).expanduser().resolve())
    root = _local_root(output_uri)
    if root is not None and root.is_dir():
        roots = {Path(os.path.abspath(root)), root.resolve()}
        for target in targets:
            entry = _entry_below(target, roots)
            if entry is not None and is_reserved_name(entry):
                raise _inside(path, root, entry, "OUTPUT", option)
    for target in targets:
        chain = [target, *target.parents]
        for below, ancestor in zip(chain, chain[1:]):
            if is_reserved_name(below.name) and ancestor.is_dir() and _is_output_folder(ancestor):
                raise _inside(path, ancestor, below.name, f"the posepipe OUTPUT {ancestor}", option)


def _is_output_folder(folder: Path) -> bool:
    from posepipe.pipeline.io.readback import ReadbackError, open_store

    try:
        open_store(str(folder))
        return True
    except ReadbackError:
        return False


def _inside(path: str | os.PathLike[str], root: Path, entry: str, whose: str, option: str) -> DestinationError:
    return DestinationError(
        f"{path} is inside {whose}'s own {entry!r} ({root}/{entry}), which posepipe keeps for the run's tables; "
        "writing there breaks every reader of that OUTPUT. Write it elsewhere: outside it, or at its top level "
        "under a name not starting with '_' or '.' and other than videos or poses", option)


def _entry_below(target: Path, roots: set[Path]) -> str | None:
    """The name of the top-level entry of a root that `target` is or lies in; None if outside every root."""
    chain = [target, *target.parents]
    for below, ancestor in zip(chain, chain[1:]):
        if ancestor in roots:
            return below.name
        try:
            if ancestor.exists() and any(os.path.samefile(ancestor, root) for root in roots):
                return below.name
        except OSError:
            continue
    return None


class Claims:
    """The paths one command writes: each claimed once, before anything is written.

    A path is known by its folded spelling and by the folded spelling of where it resolves to, so
    ``A.npz`` and ``a.npz``, or a folder and a link to it, are one claim."""

    def __init__(self) -> None:
        self._claimed: dict[str, tuple[Path, str]] = {}

    def claim(self, path: str | os.PathLike[str], what: str, option: str | None = "--output") -> Path:
        path = Path(path)
        keys = {fold(path), fold(os.path.realpath(path))}
        for key in keys:
            if key in self._claimed:
                first, first_what = self._claimed[key]
                same = "the same path" if str(first) == str(path) else \
                    "one file on this disk, or on a case-insensitive one"
                raise DestinationError(f"{what} would be written to {path} and {first_what} to {first}: {same}, so "
                                       "one would overwrite the other; nothing more is written", option)
        for key in keys:
            self._claimed[key] = (path, what)
        return path

    def refuse_inputs(self, inputs: Iterable[tuple[str, Path | None]]) -> None:
        """`DestinationError` (naming the input's option) if a claimed path is one of the input files."""
        for option, given in inputs:
            if given is None:
                continue
            for key, (path, what) in list(self._claimed.items()):
                try:
                    same = key == fold(given) or (path.exists() and os.path.samefile(path, given))
                except OSError:
                    same = False
                if same:
                    raise DestinationError(f"{what} would be written to {path}, which is the {option} file; write "
                                           "the output elsewhere", "--output")

    @property
    def paths(self) -> list[Path]:
        return list(dict.fromkeys(path for path, _ in self._claimed.values()))


def count_on_disk(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """(files that exist, paths that do not lead to a file of their own) after writing `paths`.

    Two paths that lead to one file (a name the disk folded into another's) count once; the later
    one is kept, as it is the one the file holds, and the earlier one is reported lost."""
    by_identity: dict[tuple[int, int], Path] = {}
    lost: list[Path] = []
    for path in map(Path, paths):
        try:
            stat = path.stat()
        except FileNotFoundError:
            lost.append(path)
            continue
        identity = (stat.st_dev, stat.st_ino)
        if identity in by_identity:
            lost.append(by_identity[identity])
        by_identity[identity] = path
    return list(by_identity.values()), lost
