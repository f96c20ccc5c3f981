"""Atomic writes honour the umask (mkstemp alone gives 0600: a colleague could not read the
dataset, metrics or checkpoints a user shares)."""

import os
import stat

import pytest

from remoteglm.data.io import write_json_atomic, write_text_atomic


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        a = write_text_atomic(tmp_path / "a.txt", "x")
        b = write_json_atomic(tmp_path / "sub" / "b.json", {"k": "中文"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == mode
    assert stat.S_IMODE(b.stat().st_mode) == mode
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_checkpoint_and_tokenizer_files_get_the_umask_mode(tiny_checkpoint):
    for f in [tiny_checkpoint / "latest", tiny_checkpoint / "model_config.json", tiny_checkpoint / "ice_text.model",
              *tiny_checkpoint.glob("*/mp_rank_00_model_states.pt")]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~_current_umask(), f


def _current_umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
