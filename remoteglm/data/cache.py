"""Persistent SQLite cache of LLM results, committed per reply.

Keyed by (kind, model, prompt version, source text). WAL mode plus one commit per reply means a
SIGKILL at any moment loses at most the replies still in flight, and a rerun asks for nothing
that is already stored.

Each answer also records the version of the checks that accepted it (``validator``).
``get_checked`` passes answers accepted by another version - an older, laxer one, or a cache
from before versions were recorded - through today's check: good ones are reused (and stamped
with today's version, so they are checked once), failing ones are left out and so asked again.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..errors import RemoteGLMError
from ..io import check_writable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    kind TEXT NOT NULL,        -- 'translate' or 'rewrite'
    model TEXT NOT NULL,
    version TEXT NOT NULL,     -- prompt version: a new prompt never reuses old answers
    source TEXT NOT NULL,
    result TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ok',  -- rewrite: 'ok' or 'fallback'
    created REAL NOT NULL DEFAULT (julianday('now')),
    validator TEXT NOT NULL DEFAULT '',  -- version of the checks that accepted the result
    PRIMARY KEY (kind, model, version, source)
)
"""


SQLITE_HEADER = b"SQLite format 3\x00"


def _check_cache_file(path: Path) -> None:
    """One line unless ``path`` is an SQLite file, an empty one, or can be created: SQLite would
    otherwise take over any small file it is pointed at and its content would be lost."""
    check_writable(path, "--cache", folder=False)
    if path.is_dir():
        raise RemoteGLMError(f"--cache {path} is a folder; pass a file path such as {path / 'llm_cache.sqlite'}")
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as e:
            raise RemoteGLMError(f"--cache {path}: cannot read it ({e.strerror}); pick another --cache path") from None
        if head and head != SQLITE_HEADER:
            raise RemoteGLMError(f"--cache {path} is not an SQLite cache (another file?): it is left as it is; "
                                 "pick another --cache path")


class ResultCache:
    """Thread-safe get/put of LLM results; ``put_many`` is one transaction (one reply)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        """``readonly``: look answers up without creating or changing anything (``--dry_run``);
        a cache file that does not exist yet reads as empty."""
        self.path = Path(path)
        _check_cache_file(self.path)
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
                self._add_validator_column()
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
        except sqlite3.DatabaseError as e:
            raise RemoteGLMError(f"cache {self.path}: {e}; delete it or pass another --cache path") from None
        self.readonly = readonly
        self._has_validator = "validator" in columns  # False only for an old cache opened read-only
        self._lock = threading.Lock()

    def _add_validator_column(self) -> None:
        """Caches written before answers recorded their validator get the column (empty: check again)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
        if "validator" not in columns:
            try:
                with self._db:
                    self._db.execute("ALTER TABLE results ADD COLUMN validator TEXT NOT NULL DEFAULT ''")
            except sqlite3.OperationalError as e:  # another process added it first
                if "duplicate column" not in str(e):
                    raise

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

    def get_checked(self, kind: str, model: str, version: str, sources: list[str], validator: str,
                    check) -> dict[str, tuple[str, str]]:
        """Like ``get_many``, for answers that must still pass today's checks.

        An answer stamped with ``validator`` is returned as it is. Any other answer is passed to
        ``check(source, result, status) -> bool`` first: if it passes it is returned and stamped
        (not checked again next time); if not it is left out, so the caller asks for it again, and
        the new answer replaces it.
        """
        rows: dict[str, tuple[str, str, str]] = {}
        col = "validator" if self._has_validator else "''"
        with self._lock:
            for i in range(0, len(sources), 500):  # SQLite's bound-parameter limit
                chunk = sources[i : i + 500]
                marks = ",".join("?" * len(chunk))
                cur = self._db.execute(
                    f"SELECT source, result, status, {col} FROM results WHERE kind=? AND model=? AND version=? "
                    f"AND source IN ({marks})",
                    [kind, model, version, *chunk],
                )
                rows.update({src: (res, st, val) for src, res, st, val in cur})
        found, passed = {}, []
        for src, (res, st, val) in rows.items():
            if val == validator:
                found[src] = (res, st)
            elif check(src, res, st):
                found[src] = (res, st)
                passed.append(src)
        if passed and not self.readonly:
            with self._lock, self._db:
                self._db.executemany(
                    "UPDATE results SET validator=? WHERE kind=? AND model=? AND version=? AND source=?",
                    [(validator, kind, model, version, src) for src in passed],
                )
        return found

    def put_many(self, kind: str, model: str, version: str, items: dict[str, str], status: str = "ok",
                 validator: str = "") -> None:
        """Store ``source -> result`` pairs (accepted by checks of version ``validator``) and commit."""
        if not items:
            return
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO results (kind, model, version, source, result, status, validator) "
                "VALUES (?,?,?,?,?,?,?)",
                [(kind, model, version, src, res, status, validator) for src, res in items.items()],
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
