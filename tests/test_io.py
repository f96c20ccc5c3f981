"""The file floor: one JSON reader whose every problem is one line naming the file, and atomic
writes that honour the umask (mkstemp alone gives 0600: a colleague could not read the dataset,
metrics or checkpoints a user shares)."""

import json
import os
import pickle
import stat

import pytest
import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json, torch_save_atomic, write_bytes_atomic, write_json_atomic, write_text_atomic


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


def test_bytes_and_torch_saves_are_atomic_with_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        b = write_bytes_atomic(tmp_path / "b.bin", b"\x00\xff")
        t = torch_save_atomic(tmp_path / "deep" / "t.pt", {"w": torch.arange(3)})
    finally:
        os.umask(old)
    assert b.read_bytes() == b"\x00\xff"
    assert torch.equal(torch.load(t, weights_only=True)["w"], torch.arange(3))
    assert {stat.S_IMODE(b.stat().st_mode), stat.S_IMODE(t.stat().st_mode)} == {0o640}
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_failing_torch_save_keeps_the_old_file(tmp_path):
    f = torch_save_atomic(tmp_path / "w.pt", [1])
    with pytest.raises((AttributeError, pickle.PicklingError)):
        torch_save_atomic(f, {"bad": lambda: 0})  # a lambda cannot be pickled
    assert torch.load(f, weights_only=True) == [1]
    assert not [p for p in tmp_path.rglob("*.tmp")]


def _json_error(path, **kw) -> str:
    with pytest.raises(RemoteGLMError) as e:
        read_json(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_read_json_reads_objects_lists_and_a_bom(tmp_path):
    (tmp_path / "a.json").write_bytes(b"\xef\xbb\xbf" + '{"k": "中文"}'.encode())
    (tmp_path / "b.json").write_text("[1, 2]", encoding="utf-8")
    assert read_json(tmp_path / "a.json", require_object=True) == {"k": "中文"}
    assert read_json(tmp_path / "b.json") == [1, 2]


def test_read_json_problems_are_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n "b": }', encoding="utf-8")
    assert _json_error(bad) == (f"{bad}: malformed JSON at line 2, column 7: Expecting value; "
                                "fix the file or re-download it")
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"名": 1}'.encode("gbk"))
    assert _json_error(latin).startswith(f"{latin}: not UTF-8 text (")
    missing = tmp_path / "none.json"
    assert _json_error(missing, what="caption file", hint="; pass X") == f"caption file not found: {missing}; pass X"
    assert _json_error(tmp_path) == f"JSON file not found: {tmp_path} (it is a folder; pass the .json file inside it)"
    # a file the system cannot read (here: another process's memory) is one line too, not a traceback
    assert _json_error("/proc/self/mem").startswith("cannot read /proc/self/mem: ")


@pytest.mark.parametrize("text", ["[1]", '"x"', "3", "null"])
def test_read_json_can_require_an_object(tmp_path, text):
    f = tmp_path / "config.json"
    f.write_text(text, encoding="utf-8")
    assert read_json(f) == json.loads(text)
    assert _json_error(f, require_object=True) == f"{f}: must hold a JSON object {{...}}; fix the file or re-download it"


def test_checkpoint_and_tokenizer_files_get_the_umask_mode(tiny_checkpoint):
    for f in [tiny_checkpoint / "latest", tiny_checkpoint / "model_config.json", tiny_checkpoint / "ice_text.model",
              *tiny_checkpoint.glob("*/mp_rank_00_model_states.pt")]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~_current_umask(), f


def _current_umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
