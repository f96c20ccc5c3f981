"""Small file helpers: JSON read with one-line errors, atomic writes, content digests."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..errors import RemoteGLMError


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; missing file or bad JSON become one RemoteGLMError line."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a folder; pass the .json file inside it)" if path.is_dir() else ""
        raise RemoteGLMError(f"{what} not found: {path}{hint}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise RemoteGLMError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RemoteGLMError(
            f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}; fix the file or re-download it"
        ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STALE_TEMP_SECONDS = 600


def _drop_stale_temps(path: Path) -> None:
    """Remove temp files of ``path`` that a killed writer left behind (older than 10 minutes:
    a writer still running elsewhere keeps its own)."""
    import time

    now = time.time()
    for old in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        try:
            if now - old.stat().st_mtime > STALE_TEMP_SECONDS:
                old.unlink()
        except OSError:
            pass


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def write_atomic(path: str | Path, writer: Callable[[str], Any]) -> Path:
    """Create ``path`` by ``writer(tmp_path)`` on a temp file in the same folder, fsync, then
    os.replace: readers never see half a file and a crash leaves the old one. The file gets the
    mode a plain ``open()`` would give (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text (see write_atomic)."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    """Atomically write ``obj`` as UTF-8 JSON (Chinese kept readable, not \\u-escaped)."""
    return write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (identifies an image by content, whatever its name)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
