"""One split per image content across every builder: the split registry (``splits.json``).

UC Merced's scene folders and UCM_captions are the same 2,100 images under other names; split
independently, 172 of the 210 caption-test images were scene-train images. So every builder
(translation_en2zh.py, the ``rsvqa`` and ``scenes`` importers) asks one registry file - by default
``splits.json`` beside its output folder, i.e. ``data/splits.json`` - for the split each of its
images' *content* (SHA-256 of the bytes) already has, before it writes anything:

* a derived split (a hash-based 80/10/10: the scenes importer without official lists, a caption
  list without splits) takes the registered split of the same content;
* an official split (a Karpathy dataset.json, official split lists, RSVQA's files) that puts into
  train what another source holds out (val/test), or the reverse, wins over a derived one: that
  source is marked stale and every build says how to rebuild it; against another official split it
  is refused in one line (the two cannot be mixed safely; keep them in different registries);
* within one source, train copies of content that the source also holds out are left out of train.

After writing, a builder registers its images (path, size, mtime, digest, split): the digests are
reused as long as size and mtime are unchanged, so a finished rerun hashes nothing. Fine-tuning
checks its mix against the registry beside its files (:func:`held_out_by_registry`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..errors import RemoteGLMError
from ..io import check_writable, file_digest, read_json, write_json_atomic

REGISTRY = "splits.json"
VERSION = 1
MAX_BYTES = 512 << 20  # a registry of every public remote-sensing set is a few MB; anything near this is not one


def default_registry(out_dir: str | Path | None) -> Path:
    """``splits.json`` in the folder that holds the output folder (``data/`` for the default outputs)."""
    return (Path(out_dir).parent if out_dir else Path("data")) / REGISTRY


@dataclass
class Item:
    """One image of a builder: where it is, its split, and whether that split is the dataset's own."""

    path: Path
    split: str
    official: bool
    digest: str | None = None  # filled by Registry.settle (None: no such file, content unknown)
    dropped: bool = False  # a train copy of content this source holds out: left out of train
    full: str = ""  # the absolute path (Registry._full), worked out once


@dataclass
class Source:
    out_dir: Path
    label: str  # "UCM captions", "UCM scenes", "RSVQA-LR questions"
    command: str  # how to rebuild it (printed when another source makes it stale)


@dataclass
class Settled:
    followed: dict[str, int] = field(default_factory=dict)  # other source's key -> items that took its split
    stale: dict[str, set] = field(default_factory=dict)  # derived source's key -> contents it now leaks
    dropped: list[Item] = field(default_factory=list)


def _held(split: str) -> bool:
    return split != "train"


class Registry:
    """The registry file: ``{"version": 1, "sources": {out_dir: {"label", "command", "stale",
    "files": {image: [size, mtime_ns, sha256, split, official]}}}}``, paths relative to its folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._base = os.path.abspath(self.path.parent)
        self._dirs: dict[str, str] = {}  # folder as given -> absolute (thousands of images share a few)
        self._known: dict[str, tuple[int, int, str]] | None = None  # image -> (size, mtime_ns, digest)
        self.sources = self._read()

    # ---- the file ----------------------------------------------------------------------------------
    def _damaged(self, why: str) -> RemoteGLMError:
        return RemoteGLMError(f"{self.path}: {why}; it is not a split registry this version wrote: move it away and "
                              "rebuild the datasets that share it (or pass --splits another file)")

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        if not self.path.is_file():
            raise RemoteGLMError(f"--splits {self.path} is a folder; pass a file such as data/{REGISTRY}")
        if self.path.stat().st_size > MAX_BYTES:
            raise self._damaged(f"{self.path.stat().st_size:,} bytes")
        try:
            obj = read_json(self.path, "split registry")
        except RemoteGLMError as e:  # the one reader's line, with what to do about a registry
            raise self._damaged(str(e).removeprefix(f"{self.path}: ")) from None
        sources = obj.get("sources") if isinstance(obj, dict) else None
        if not isinstance(sources, dict) or obj.get("version") != VERSION:
            raise self._damaged("not a split registry (no version 1 'sources' object)")
        for key, src in sources.items():
            ok = (isinstance(src, dict) and isinstance(src.get("files"), dict)
                  and all(isinstance(src.get(k), str) for k in ("label", "command")))
            if not ok or not all(isinstance(v, list) and len(v) == 5 and isinstance(v[2], str) and isinstance(v[3], str)
                                 for v in src["files"].values()):
                raise self._damaged(f"not a split registry (source {key!r} has no valid 'files')")
        # a source whose output folder is gone leaks nothing any more
        return {k: v for k, v in sources.items() if os.path.isdir(self._abs(k))}

    # Paths are compared as absolute, normalised strings (not realpath: that costs a stat per path
    # component, and a symlinked copy only loses the reuse of its digest, never the content check).
    def _full(self, path: str | Path, start: str = "") -> str:
        """``path`` (relative to ``start``, else to the working folder) as an absolute, normalised string."""
        head, tail = os.path.split(os.fspath(path))
        if tail in ("", ".", ".."):
            return os.path.normpath(os.path.join(start or os.getcwd(), path))
        key = start + "\0" + head
        if key not in self._dirs:
            self._dirs[key] = os.path.normpath(os.path.join(start or os.getcwd(), head))
        return os.path.join(self._dirs[key], tail)

    def _abs(self, rel: str) -> str:
        return self._full(rel, self._base)

    def _rel(self, path: str | Path, full: str = "") -> str:
        full = full or self._full(path)
        if full.startswith(self._base + os.sep):
            return full[len(self._base) + 1:].replace(os.sep, "/")
        try:
            return Path(os.path.relpath(full, self._base)).as_posix()
        except ValueError:  # Windows: another drive
            return Path(full).as_posix()

    def key(self, out_dir: str | Path) -> str:
        return self._rel(out_dir)

    def describe(self, key: str) -> str:
        return f"{self.sources[key]['label']} ({self._abs(key)})"

    # ---- contents ------------------------------------------------------------------------------
    def digest(self, path: str | Path) -> str | None:
        """SHA-256 of an image file, reused while its size and mtime are what was registered;
        None when there is no such file."""
        return self._digest(self._full(path))

    def _digest(self, full: str) -> str | None:
        if self._known is None:
            self._known = {self._abs(rel): (v[0], v[1], v[2]) for src in self.sources.values()
                           for rel, v in src["files"].items()}
        try:
            st = os.stat(full)
        except OSError:
            return None
        known = self._known.get(full)
        if known and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
        d = file_digest(full)
        self._known[full] = (st.st_size, st.st_mtime_ns, d)
        return d

    def entries(self, skip: str = "") -> dict[str, list[tuple[str, bool, str, str]]]:
        """digest -> [(split, official, source key, image path)] of every source but ``skip``."""
        out: dict[str, list[tuple[str, bool, str, str]]] = {}
        for key, src in self.sources.items():
            if key != skip:
                for rel, (_s, _m, digest, split, official) in src["files"].items():
                    out.setdefault(digest, []).append((split, bool(official), key, rel))
        return out

    # ---- builders --------------------------------------------------------------------------------
    def settle(self, source: Source, items: list[Item]) -> Settled:
        """Give ``items`` the splits their content must have (see the module docstring); raises one
        line if an official split disagrees with another source's official split. Writes nothing."""
        own = self.key(source.out_dir)
        others = self.entries(skip=own)
        done = Settled()
        clashes: list[tuple[Item, tuple]] = []
        for it in items:
            it.full = self._full(it.path)
            it.digest = self._digest(it.full)
            regs = others.get(it.digest, []) if it.digest else []
            if not regs:
                continue
            if not it.official:
                pick = next((r for r in regs if r[1]), regs[0])  # an official split first
                it.split = pick[0]
                done.followed[pick[2]] = done.followed.get(pick[2], 0) + 1
                continue
            for split, official, key, rel in regs:
                if _held(split) != _held(it.split):
                    if official:
                        clashes.append((it, (split, key, rel)))
                    else:
                        done.stale.setdefault(key, set()).add(it.digest)
        if clashes:
            n = len({it.digest for it, _ in clashes})
            it, (split, key, rel) = clashes[0]
            raise RemoteGLMError(
                f"the official split of {source.label} and that of {self.describe(key)} disagree on {n} image(s) "
                f"(e.g. {it.path} is {it.split} here, its copy {self._abs(rel)} is {split} there; registry "
                f"{self.path}): they cannot be mixed safely; build them with different --splits files and never "
                "train on one while evaluating on the other")
        self._one_split_within(items, done)
        return done

    @staticmethod
    def _one_split_within(items: list[Item], done: Settled) -> None:
        groups: dict[str, list[Item]] = {}
        for it in items:
            if it.digest:
                groups.setdefault(it.digest, []).append(it)
        for group in groups.values():
            if len({it.split for it in group}) < 2:
                continue
            official = [it for it in group if it.official]
            held = [it for it in official if _held(it.split)]
            target = (held or official or group)[0].split
            for it in group:
                if not it.official:
                    it.split = target
                elif held and not _held(it.split):
                    it.dropped = True
                    done.dropped.append(it)

    def notes(self, source: Source, done: Settled) -> list[str]:
        """What settle did, as lines for the user (a left-out train copy is a warning)."""
        lines = [f"split registry {self.path}: {n} image(s) take the split that {self.describe(k)} registered for "
                 "the same content" for k, n in done.followed.items()]
        if done.dropped:
            n = len({it.path for it in done.dropped})
            lines.append(f"warning: {n} train image(s) of {source.label} have the content of its own "
                         f"val/test images (e.g. {done.dropped[0].path}): left out of train")
        return lines

    def register(self, source: Source, items: Iterable[Item], done: Settled) -> list[str]:
        """Record ``items`` as the source's images (replacing what it had), mark the derived sources
        that ``done`` found leaking as stale, write the file if anything changed, and return one
        warning line per stale source."""
        fresh = Registry(self.path)  # another builder may have written meanwhile: merge into the latest
        own = fresh.key(source.out_dir)
        files = {}
        for it in items:
            if it.digest and not it.dropped:
                size, mtime, _ = self._known[it.full]
                files[fresh._rel(it.path, it.full)] = [size, mtime, it.digest, it.split, int(it.official)]
        entry = {"label": source.label, "command": source.command, "stale": "", "files": files}
        changed = fresh.sources.get(own) != entry and (files or own in fresh.sources)
        if changed:  # none of this source's images on disk (a caption set without them) and never was: none
            fresh.sources[own] = entry
        for key, contents in done.stale.items():
            if key in fresh.sources and key != own:
                why = f"{len(contents)} image(s) are in other splits than in the official split of {source.label}"
                changed = changed or fresh.sources[key].get("stale") != why
                fresh.sources[key]["stale"] = why
        if changed:
            write_json_atomic(self.path, {"version": VERSION, "sources": fresh.sources}, indent=None)
        self.sources = fresh.sources
        return [f"warning: {fresh.describe(k)}: {s['stale']}, so its files leak into the other's; rebuild it: "
                f"{s['command']}" for k, s in fresh.sources.items() if s.get("stale")]


class SplitCheck:
    """A builder's use of the registry: ``SplitCheck(...)`` before anything is written (the
    builder's ``images`` get their settled splits; ``kept`` leaves out the dropped train copies),
    ``register()`` after its files are written."""

    def __init__(self, reg: Registry, source: Source, images: list, path_of: Callable[[object], Path],
                 official_of: Callable[[object], bool], say: Callable[[str], None]):
        check_writable(reg.path, "--splits", folder=False)  # registered after the outputs: checked before them
        self.reg, self.source = reg, source
        self.items = [Item(path_of(im), im.split, official_of(im)) for im in images]
        self.done = reg.settle(source, self.items)
        for im, it in zip(images, self.items):
            im.split = it.split
        self.kept = [im for im, it in zip(images, self.items) if not it.dropped]
        self.say = say
        for line in reg.notes(source, self.done):
            say(line)

    def register(self) -> None:
        for line in self.reg.register(self.source, self.items, self.done):
            self.say(line)


# ---- fine-tuning and evaluation --------------------------------------------------------------------
def same_content(paths: Iterable[Path], others: Iterable[Path],
                 digest: Callable[[Path], str | None] = file_digest) -> dict[Path, Path]:
    """Each of ``paths`` that is one of ``others`` or a byte-identical copy -> that one. Only files
    whose size occurs on both sides are hashed, each once."""
    resolved: dict[Path, Path] = {}
    by_size: dict[int, list[Path]] = {}
    for q in others:
        q = Path(q)
        resolved.setdefault(q.resolve(), q)
        if q.is_file():
            by_size.setdefault(q.stat().st_size, []).append(q)
    memo: dict[Path, str | None] = {}

    def d(p: Path) -> str | None:
        if p not in memo:
            memo[p] = digest(p)
        return memo[p]

    out: dict[Path, Path] = {}
    for p in paths:
        p = Path(p)
        if p.resolve() in resolved:
            out[p] = resolved[p.resolve()]
            continue
        same = by_size.get(p.stat().st_size, []) if p.is_file() else []
        for q in same:
            if d(p) == d(q):
                out[p] = q
                break
    return out


def held_out_by_registry(train_files: Iterable[str | Path], images: Iterable[Path]) -> tuple[Path | None, list, list]:
    """(registry, [(image, split, source description)], [rebuild commands of stale sources]) for
    training images whose content the registry beside the training files
    (``<file's folder>/../splits.json``) holds out as val/test in any source; ``(None, [], [])``
    when no registry there holds any of them."""
    images = list(dict.fromkeys(images))
    for f in dict.fromkeys(default_registry(Path(f).absolute().parent) for f in train_files):
        if not f.is_file():
            continue
        reg = Registry(f)
        held: dict[str, tuple[str, str]] = {}
        sizes = set()
        for key, src in reg.sources.items():
            for _rel, (size, _m, digest, split, _o) in src["files"].items():
                if _held(split) and digest not in held:
                    held[digest] = (split, reg.describe(key))
                    sizes.add(size)
        found = []
        for img in images:
            try:
                if os.stat(img).st_size not in sizes:  # only a file of a held-out size can be one
                    continue
            except OSError:
                continue
            d = reg.digest(img)
            if d in held:
                found.append((img, *held[d]))
        if found:
            return f, found, [src["command"] for src in reg.sources.values() if src.get("stale")]
    return None, [], []
