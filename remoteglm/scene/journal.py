"""The tile journal of a scene run (``OUT/tiles.jsonl``): what makes a killed run resumable.

One JSON object per line, UTF-8:

    {"journal": "remoteglm scene", "version": 1, "settings": {...}}       first line: what was asked
    {"run": 2}                                                            each start of the job
    {"tile": 17, "window": [x0, y0, x1, y1], "status": "done", "valid": 0.98, "answer": "...",
     "boxes": [[x1, y1, x2, y2], ...], "unread": 0, "run": 2}             a tile answered
    {"tile": 18, ..., "status": "skipped", "valid": 0.0}                  nothing (or too little) to ask about
    {"tile": 19, ..., "status": "failed", "error": "corrupt tile: ..."}   asked again by the next run
    {"overview": "...", "run": 2}                                         the whole scene's caption

``boxes`` are in scene pixels (already mapped from the tile, merged only when the outputs are
written). Lines are appended with one ``write`` per answered batch and fsync'd (skipped tiles,
cheap to redo, at least every couple of seconds), so a kill (SIGKILL, a
power cut) can only cut the last line: it is dropped, and the file is cut back to the last
whole line before anything is appended. A later line for the same tile wins (a failed tile
answered by a rerun). A run whose settings differ from the first line's is refused: answers
of two different questions must not be mixed in one output.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from remoteglm.errors import RemoteGLMError

NAME = "tiles.jsonl"
VERSION = 1
FINISHED = ("done", "skipped")  # a tile with one of these is not asked again
_FLUSH_SECONDS = 2.0


class Journal:
    """``tiles`` (tile index -> its latest record), ``overview`` (the scene caption or None),
    ``runs`` (how many runs started), ``settings``. ``open`` reads (and repairs a torn end);
    ``add`` queues a record, ``flush`` writes the queue as one append + fsync."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.settings = settings
        self.tiles: dict[int, dict] = {}
        self.overview: str | None = None
        self.runs = 0
        self._pending: list[str] = []
        self._last_flush = time.monotonic()

    # ---- reading --------------------------------------------------------------------------------
    @classmethod
    def read(cls, out_dir: str | os.PathLike, settings: dict) -> Journal:
        """The journal in ``out_dir`` (empty when there is none), checked against ``settings``;
        nothing is written. One line if the file is damaged or was written for other settings."""
        j = cls(Path(out_dir) / NAME, settings)
        if not j.path.is_file():
            return j
        try:
            data = j.path.read_bytes()
        except OSError as e:
            raise RemoteGLMError(f"cannot read {j.path}: {e.strerror or e}") from None
        whole = data[: data.rfind(b"\n") + 1]  # a torn last line (a kill mid-write) is left out
        lines = whole.decode("utf-8", errors="replace").splitlines()
        for n, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            if not isinstance(rec, dict):
                raise RemoteGLMError(f"{j.path}, line {n}: not a journal record; the file is damaged: "
                                     "delete it to start over, or pick a fresh --out")
            if n == 1:
                j._check_header(rec)
            elif "tile" in rec:
                j.tiles[int(rec["tile"])] = rec
            elif "overview" in rec:
                j.overview = rec["overview"]
            elif "run" in rec:
                j.runs = max(j.runs, int(rec["run"]))
        return j

    def _check_header(self, rec: dict) -> None:
        if rec.get("journal") != "remoteglm scene" or rec.get("version") != VERSION:
            raise RemoteGLMError(f"{self.path} is not a scene journal of this version (first line "
                                 f"{json.dumps(rec, ensure_ascii=False)[:80]}); pick a fresh --out")
        old = rec.get("settings") or {}
        diff = [k for k in sorted(set(old) | set(self.settings)) if old.get(k) != self.settings.get(k)]
        if diff:
            shown = "; ".join(f"{k} {_short(old.get(k))} -> {_short(self.settings.get(k))}" for k in diff[:4])
            raise RemoteGLMError(f"{self.path.parent} holds a scene run with other settings ({shown}): answers of "
                                 "different runs are not mixed; rerun with the same arguments to continue it, or "
                                 "pick a fresh --out")

    def finished(self, tile: int) -> bool:
        rec = self.tiles.get(tile)
        return rec is not None and rec.get("status") in FINISHED

    def check_grid(self, windows: list) -> None:
        """One line if a journalled tile is not on this run's grid (the model behind an automatic
        tile size changed)."""
        for k, rec in self.tiles.items():
            if k >= len(windows) or list(windows[k]) != list(rec.get("window", ())):
                raise RemoteGLMError(f"{self.path}: tile {k} {rec.get('window')} is not on this run's tile grid "
                                     "(the tile size changed with the model?); give the same --tile and "
                                     "--overlap as that run, or pick a fresh --out")

    # ---- writing --------------------------------------------------------------------------------
    def start(self) -> int:
        """Begin a run: the header if the journal is new, a torn end cut off, a ``run`` line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                os.truncate(self.path, keep)
        else:
            self._pending.append(_line({"journal": "remoteglm scene", "version": VERSION, "settings": self.settings}))
        self.runs += 1
        self._pending.append(_line({"run": self.runs}))
        self.flush()
        return self.runs

    def add(self, rec: dict) -> None:
        """Queue ``rec`` (a tile or the overview) and take it as read; ``flush`` writes it."""
        rec = {**rec, "run": self.runs}
        if "tile" in rec:
            self.tiles[int(rec["tile"])] = rec
        if "overview" in rec:
            self.overview = rec["overview"]
        self._pending.append(_line(rec))

    def flush(self, force: bool = True) -> None:
        """Append the queued lines in one write and fsync (``force=False``: only when the last
        flush is over a couple of seconds old, for cheap records such as skipped tiles)."""
        if not self._pending or (not force and time.monotonic() - self._last_flush < _FLUSH_SECONDS):
            return
        data = "".join(self._pending).encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise RemoteGLMError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._pending.clear()
        self._last_flush = time.monotonic()


def _line(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n"


def _short(v) -> str:
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."
