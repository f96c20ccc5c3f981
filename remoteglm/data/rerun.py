"""The stamp that lets an up-to-date rerun skip even reading its inputs (``OUT/.rerun_stamp.json``).

A job whose inputs are thousands of small files (DIOR-RSVG: 17,402 XML files and as many images)
spends a rerun re-reading them before its output stamp (:data:`~remoteglm.data.jobs.STAMP`) can
find that nothing changed. So before reading, the job lists its input folders and files as
(relative path, size, mtime_ns) - what make and rsync compare - and digests that listing with its
options, its version and the listing of the modules its code is made of (:func:`sources`: an
upgrade that touches them rebuilds), through :func:`~remoteglm.data.jobs.build_stamp`. After a finished build it records that digest with the
SHA-256 of each output file (large ones, image tiles, by size and mtime) and the state of the
files it keeps besides (the split registry; ``failures.json``, which must be absent). A rerun that
finds the same digest and every output and kept file as recorded reads nothing and writes nothing;
any difference - an input touched, edited or replaced, another option, an output deleted or
edited, the registry rewritten, a run left unfinished - makes it a full build.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from ..errors import RemoteGLMError
from ..io import file_digest, read_json, write_json_atomic
from .jobs import build_stamp

STAMP_FILE = ".rerun_stamp.json"
ROOT = Path(__file__).resolve().parents[2]  # the folder holding the remoteglm package
_FROM = re.compile(r"^[ \t]*from[ \t]+(\.+|remoteglm\b\.?)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.MULTILINE)


def _temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")  # an atomic writer's temp file (remoteglm.io)


def listing(folder: Path, skip: Iterable[Path] = ()) -> list[tuple[str, int, int]]:
    """(path relative to ``folder``, size, mtime_ns) of every file under it, sorted; folders in
    ``skip`` (outputs kept inside an input folder) and atomic writers' temp files left out."""
    skipped = {os.path.abspath(p) for p in skip}
    out, todo = [], [os.path.abspath(folder)]
    base = len(todo[0]) + 1
    while todo:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for e in entries:
            if e.path in skipped or _temp(e.name):
                continue
            try:
                if e.is_dir():
                    todo.append(e.path)
                else:
                    st = e.stat()
                    out.append((e.path[base:], st.st_size, st.st_mtime_ns))
            except OSError:  # gone meanwhile: not an input any more
                continue
    return sorted(out)


def state(path: Path) -> list[int] | None:
    """[size, mtime_ns] of a file, None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _source(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for f in (path.with_suffix(".py"), path / "__init__.py"):
        if f.is_file():
            return f
    return None


def sources(module: str) -> list[tuple[str, int, int]]:
    """(file, size, mtime_ns) of ``module``'s source and of every module of this package it imports,
    transitively, as its ``from .x import y`` / ``from remoteglm.x import y`` lines name them (the
    packages' ``__init__`` files too). Not the others: a change elsewhere in the package rebuilds
    nothing."""
    out, todo, seen = [], [module], set()
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith("remoteglm"):
            continue
        seen.add(name)
        todo.append(name.rpartition(".")[0])  # its package's __init__ runs first
        f = _source(name)
        if f is None:  # a class or function imported by name, not a module
            continue
        st = f.stat()
        out.append((f.relative_to(ROOT).as_posix(), st.st_size, st.st_mtime_ns))
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        for dots, mod, names in _FROM.findall(f.read_text(encoding="utf-8")):
            base = package if dots.startswith(".") else "remoteglm"
            for _ in range(len(dots) - 1 if dots.startswith(".") else 0):
                base = base.rpartition(".")[0]
            base = f"{base}.{mod}" if mod else base
            todo.append(base)
            names = re.sub(r"#[^\n]*", "", names).strip("()")
            todo.extend(f"{base}.{n.split()[0]}" for n in names.split(",") if n.strip())  # from . import faithful
    return sorted(out)


def input_key(version: str, options: dict, folders: Iterable[Path], files: Iterable[Path],
              skip: Iterable[Path] = (), code: str = "") -> str:
    """The digest of everything a build reads: ``options``, each folder's :func:`listing`, the
    :func:`state` of each file, and the :func:`sources` of the module ``code`` (its builder)."""
    skip = list(skip)
    return build_stamp(version, options, [(str(Path(f).absolute()), listing(f, skip)) for f in folders],
                       [(str(Path(f).absolute()), state(f)) for f in files], sources(code) if code else [])


class RerunStamp:
    """``fresh()`` before reading anything, ``record(...)`` after a build that left nothing unfinished."""

    def __init__(self, out_dir: Path, key: str):
        self.out_dir, self.key = Path(out_dir), key
        self.path = self.out_dir / STAMP_FILE

    def _read(self) -> dict | None:
        try:
            return read_json(self.path, require_object=True)
        except RemoteGLMError:  # none yet, or damaged: the build's own record, so it is rebuilt
            return None

    def _outputs_as_recorded(self, obj: dict) -> bool:
        try:
            for name, (size, digest) in obj["hashed"].items():
                p = self.out_dir / name
                if state(p) is None or os.path.getsize(p) != size or file_digest(p) != digest:
                    return False
            return all(state(self.out_dir / name) == st for name, st in obj["stat"].items())
        except (KeyError, TypeError, ValueError, AttributeError, OSError):  # not what record wrote
            return False

    def fresh(self) -> bool:
        """Whether the last build had these inputs and options, and left its outputs and kept files
        as they are now (outputs compared by content, tiles by size and mtime)."""
        obj = self._read()
        if obj is None or obj.get("key") != self.key or not self._outputs_as_recorded(obj):
            return False
        try:
            return all(state(Path(p)) == st for p, st in obj["kept"].items())
        except (TypeError, ValueError, AttributeError, KeyError):
            return False

    def outputs_edited(self) -> bool:
        """Whether an output of the last finished build was edited or removed since (whatever its
        inputs): the build writes them all again, even where its own output stamp sees no change."""
        obj = self._read()
        return obj is not None and not self._outputs_as_recorded(obj)

    def record(self, hashed: Iterable[Path], stat: Iterable[Path], kept: Iterable[Path]) -> None:
        """Write the stamp: ``hashed`` outputs by content, ``stat`` outputs by size and mtime (paths
        inside the output folder), ``kept`` files anywhere by state (None: it must stay absent)."""
        rel = lambda p: Path(p).relative_to(self.out_dir).as_posix()  # noqa: E731
        write_json_atomic(self.path, {
            "key": self.key,
            "hashed": {rel(p): [os.path.getsize(p), file_digest(p)] for p in hashed},
            "stat": {rel(p): state(p) for p in stat},
            "kept": {str(Path(p).absolute()): state(p) for p in kept},
        })

    def clear(self) -> None:
        """Forget the last build (a run that leaves work unfinished must never be skipped)."""
        if self.path.exists():
            self.path.unlink()
