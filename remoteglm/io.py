"""File floor: THE JSON reader (one-line errors naming the file) and THE atomic writer (text, JSON,
bytes, torch.save), plus content digests and writability checks. Imports only remoteglm.errors."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from remoteglm.errors import RemoteGLMError


def read_json(path: str | Path, what: str = "JSON file", *, hint: str = "", require_object: bool = False) -> Any:
    """Parse a JSON file; every problem is one RemoteGLMError line naming the file.

    ``what`` names the file in the missing-file line, ``hint`` (e.g. "; pass ...") is added to it;
    ``require_object``: anything but a JSON object (config.json, run records) is refused too.
    """
    path = Path(path)
    if not path.is_file():
        folder = " (it is a folder; pass the .json file inside it)" if path.is_dir() else ""
        raise RemoteGLMError(f"{what} not found: {path}{folder}{hint}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise RemoteGLMError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 JSON") from None
    except OSError as e:  # unreadable (permissions, a vanished network share): still one line
        raise RemoteGLMError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RemoteGLMError(
            f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}; fix the file or re-download it"
        ) from None
    if require_object and not isinstance(obj, dict):
        raise RemoteGLMError(f"{path}: must hold a JSON object {{...}}; fix the file or re-download it")
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STALE_TEMP_SECONDS = 600
# write_atomic's temp files: ".NAME.PID-HOST.RANDOM.tmp"; earlier versions wrote ".NAME.RANDOM.tmp".
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{6})\.[a-z0-9_]+\.tmp")
_OLD_TEMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]+\.tmp")


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    """Which machine a temp file's writer ran on (a shared folder may hold other machines' writers)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def drop_stale_temps(folder: str | Path, writing: str = "") -> None:
    """Remove the temp files that killed atomic writers left in ``folder``, whatever their target.

    Only write_atomic's own names are touched: one whose writer ran on this machine goes as soon as
    that process is gone; any other (another machine's, or an earlier version's, then only for a
    target that exists or is ``writing``) once untouched for 10 minutes - a writer at work keeps its own.
    """
    now = time.time()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(".tmp")]
    except OSError:  # no folder yet: nothing left behind
        return
    for e in entries:
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            m = _TEMP.fullmatch(e.name)
            if m:
                gone = m["host"] == _host_tag() and not _alive(int(m["pid"]))
            else:
                m = _OLD_TEMP.fullmatch(e.name)
                if not m or (m["name"] != writing and not os.path.isfile(os.path.join(folder, m["name"]))):
                    continue
                gone = False
            if gone or now - e.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS:
                os.unlink(e.path)
        except OSError:  # removed meanwhile, or not ours to remove
            pass


def check_writable(path: str | Path, option: str, folder: bool = True) -> None:
    """One line if ``path`` (a folder, or with ``folder=False`` a file) cannot be created or written,
    naming ``option``: checked before any work, so nothing is made or asked for in vain."""
    where = Path(path) if folder else Path(path).parent
    probe = where.absolute()
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise RemoteGLMError(f"{option} {path}: {probe} is a file, not a folder; pick another {option}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RemoteGLMError(f"{option} {path}: no permission to write in {probe}; pick another {option}")


def write_atomic(path: str | Path, writer: Callable[[str], Any]) -> Path:
    """Create ``path`` by ``writer(tmp_path)`` on a temp file in the same folder, fsync, then
    os.replace: readers never see half a file and a crash leaves the old one. The file gets the
    mode a plain ``open()`` would give (0666 minus the umask), not mkstemp's 0600. The folder's
    leftovers of killed writers are removed first; a folder or file that cannot be written is one
    RemoteGLMError line."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        drop_stale_temps(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_host_tag()}.", suffix=".tmp",
                                   dir=path.parent)
    except OSError as e:
        raise RemoteGLMError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp, str(path)):  # the disk, not the writer's input
            raise RemoteGLMError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text (see write_atomic)."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    """Atomically write ``obj`` as UTF-8 JSON (Chinese kept readable, not \\u-escaped)."""
    return write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Atomically write raw bytes (see write_atomic)."""
    return write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def torch_save_atomic(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` through write_atomic: a checkpoint is never seen half written."""
    import torch  # only the writers of tensors pay for it

    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (identifies an image by content, whatever its name)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
