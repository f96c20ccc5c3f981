"""Persistent SQLite cache of LLM results, committed per reply.

Keyed by (kind, model, prompt version, source text). WAL mode plus one commit per reply means a
SIGKILL at any moment loses at most the replies still in flight, and a rerun asks for nothing
that is already stored.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..errors import RemoteGLMError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    kind TEXT NOT NULL,        -- 'translate' or 'rewrite'
    model TEXT NOT NULL,
    version TEXT NOT NULL,     -- prompt version: a new prompt never reuses old answers
    source TEXT NOT NULL,
    result TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ok',  -- rewrite: 'ok' or 'fallback'
    created REAL NOT NULL DEFAULT (julianday('now')),
    PRIMARY KEY (kind, model, version, source)
)
"""


class ResultCache:
    """Thread-safe get/put of LLM results; ``put_many`` is one transaction (one reply)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        """``readonly``: look answers up without creating or changing anything (``--dry-run``);
        a cache file that does not exist yet reads as empty."""
        self.path = Path(path)
        try:
            if readonly:
                target = f"{self.path.absolute().as_uri()}?mode=ro" if self.path.exists() else "file::memory:"
                self._db = sqlite3.connect(target, uri=True, check_same_thread=False, timeout=30)
                if not self.path.exists():
                    self._db.execute(_SCHEMA)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                self._db.commit()
        except sqlite3.DatabaseError as e:
            raise RemoteGLMError(f"cache {self.path}: {e}; delete it or pass another --cache path") from None
        self._lock = threading.Lock()

    def get_many(self, kind: str, model: str, version: str, sources: list[str]) -> dict[str, tuple[str, str]]:
        """source -> (result, status) for the sources already stored."""
        found: dict[str, tuple[str, str]] = {}
        with self._lock:
            for i in range(0, len(sources), 500):  # SQLite's bound-parameter limit
                chunk = sources[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT source, result, status FROM results WHERE kind=? AND model=? AND version=? "
                    f"AND source IN ({marks})",
                    [kind, model, version, *chunk],
                )
                found.update({src: (res, st) for src, res, st in rows})
        return found

    def put_many(self, kind: str, model: str, version: str, items: dict[str, str], status: str = "ok") -> None:
        """Store ``source -> result`` pairs and commit before returning."""
        if not items:
            return
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO results (kind, model, version, source, result, status) VALUES (?,?,?,?,?,?)",
                [(kind, model, version, src, res, status) for src, res in items.items()],
            )

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            if kind is None:
                return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM results WHERE kind=?", (kind,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "ResultCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
