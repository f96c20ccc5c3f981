"""Checkpoint files are unpickled with weights_only=True and a short allow-list: a file that would
run code is refused (one line: the file, the global, --trust_checkpoint) before anything runs;
what sat, DeepSpeed and bitsandbytes really write loads without trusting it; --trust_checkpoint
is the only way past the check, in every command that reads checkpoints."""

import datetime
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.checkpoint import load_model
from remoteglm.model.reading import read_checkpoint
from remoteglm.model.saving import save_sat_checkpoint
from remoteglm.model.unpickle import SAFE_GLOBALS, torch_load, trust_checkpoints

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
ENV.pop("MASTER_PORT", None)


class RunsCode:
    """Unpickling this object executes Python code (here: it creates a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture(autouse=True)
def untrusted():
    old = trust_checkpoints(False)
    yield
    trust_checkpoints(old)


def weights_file(d: Path) -> Path:
    return d / (d / "latest").read_text().strip() / "mp_rank_00_model_states.pt"


def poisoned_copy(tiny_checkpoint: Path, dst: Path, extra) -> Path:
    d = shutil.copytree(tiny_checkpoint, dst)
    f = weights_file(d)
    obj = torch.load(f, weights_only=True)
    obj["extra"] = extra
    torch.save(obj, f)
    return d


def one_line(fn, *a, **kw) -> str:
    with pytest.raises(RemoteGLMError) as e:
        fn(*a, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_code_in_a_checkpoint_is_refused_before_it_runs(tiny_checkpoint, tmp_path, monkeypatch, legacy):
    marker = tmp_path / "marker"
    d = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    f = weights_file(d)
    obj = torch.load(f, weights_only=True)
    obj["payload"] = RunsCode(marker)
    torch.save(obj, f, _use_new_zipfile_serialization=not legacy)
    # sat's resume path sets this variable; it must not switch the check off
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    msg = one_line(load_model, d)
    assert str(f) in msg and re.search(r"it pickles (builtins\.)?exec\b", msg) and "--trust_checkpoint" in msg
    assert not marker.exists()
    one_line(read_checkpoint, d)
    assert not marker.exists()
    # the file really runs code when trusted: the refusal above is what kept the marker away
    trust_checkpoints(True)
    load_model(d)
    assert marker.exists()


def test_trust_switch_loads_an_unlisted_type(tiny_checkpoint, tmp_path):
    d = poisoned_copy(tiny_checkpoint, tmp_path / "c", datetime.date(2023, 6, 1))
    msg = one_line(load_model, d)
    assert "it pickles datetime.date" in msg and "--trust_checkpoint" in msg
    assert torch_load(weights_file(d), trust=True)["extra"] == datetime.date(2023, 6, 1)
    trust_checkpoints(True)
    load_model(d)


def test_qlora_state_dict_with_quantstate_loads_untrusted(tiny_checkpoint, tmp_path):
    import bitsandbytes.functional as bnbf

    from remoteglm.model.lora import add_lora

    model, tok, _ = load_model(tiny_checkpoint)
    add_lora(model, 4, qlora=True)
    sd = model.state_dict()
    qs_keys = [k for k in sd if k.endswith(".quant_state")]
    assert qs_keys and all(isinstance(sd[k], bnbf.QuantState) for k in qs_keys)
    d = save_sat_checkpoint(model, None, tmp_path / "q", tokenizer=tok)
    back = torch_load(weights_file(d))["module"]
    for k in qs_keys:
        a, b = sd[k], back[k]
        assert isinstance(b, bnbf.QuantState) and b.quant_type == a.quant_type and b.shape == a.shape
        assert torch.equal(a.absmax, b.absmax) and torch.equal(a.code, b.code)
        assert torch.equal(a.state2.absmax, b.state2.absmax)
    load_model(d)


DS_WRITER = textwrap.dedent("""
    import argparse, os, random, sys
    import numpy as np, torch
    out = sys.argv[1]
    import deepspeed.comm.torch  # noqa: F401
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # skip a 60 s JIT build on the CPU
    import deepspeed
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    cfg = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 1}, "gradient_clipping": 1.0,
           "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}, "fp16": {"enabled": FP16}}
    engine, *_ = deepspeed.initialize(model=net, model_parameters=net.parameters(), config=cfg)
    dtype = next(engine.module.parameters()).dtype
    for _ in range(2):
        engine.backward(engine(torch.randn(1, 4).to(dtype)).float().sum())
        engine.step()
    # what sat's save_ds_checkpoint adds as client state, and a Namespace as DeepSpeed users keep
    engine.save_checkpoint(out, tag="2", client_state={
        "iteration": 2, "random_rng_state": random.getstate(), "np_rng_state": np.random.get_state(),
        "torch_rng_state": torch.get_rng_state(), "args": argparse.Namespace(lr=1e-3, layer_range=[0, 14])})
    torch.save(engine.optimizer.state_dict(), os.path.join(out, "2", "optim_rank_00.pt"))
""")


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a).__module__.startswith("numpy"):
        import numpy as np

        return np.array_equal(a, b)
    if hasattr(a, "__dict__") and not isinstance(a, type):
        return type(a) is type(b) and _same(vars(a), vars(b))
    return a == b


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_real_deepspeed_files_load_untrusted(tmp_path, fp16):
    from remoteglm.compat import free_port

    script = tmp_path / "write.py"
    script.write_text(DS_WRITER.replace("FP16", str(fp16)))
    env = {**ENV, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "DS_ACCELERATOR": "cpu"}
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "ds")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    files = sorted((tmp_path / "ds" / "2").glob("*.pt"))
    assert {f.name for f in files} >= {"mp_rank_00_model_states.pt", "optim_rank_00.pt"}
    assert any("optim_states" in f.name for f in files)  # DeepSpeed's own ZeRO optimizer file
    for f in files:
        with pytest.raises(Exception, match="Weights only load failed"):
            torch.load(f, weights_only=True)  # the allow-list is what makes these load
        ours, full = torch_load(f), torch.load(f, map_location="cpu", weights_only=False)
        assert _same(full, ours), f.name


def test_allow_list_is_plain_data(tmp_path):
    """Every listed name resolves to a class (rebuilt from its state, no code of the file's choosing)
    or to numpy's array rebuilder; anything else is refused by name."""
    import importlib.util

    import numpy as np

    from remoteglm.model.unpickle import _resolve_global

    for name, (module, _) in SAFE_GLOBALS.items():
        if importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        obj = _resolve_global(tmp_path, name)
        assert isinstance(obj, type) or obj is np._core.multiarray._reconstruct, name
    for name in ("builtins.exec", "os.system", "torch.load", "numpy.load", "subprocess.Popen"):
        assert "--trust_checkpoint" in one_line(_resolve_global, tmp_path, name)


# ---- the flag in every command that reads checkpoints -----------------------------------------------------
HELP = [
    "remoteglm.serve.cli", "remoteglm.serve.web", "remoteglm.serve.api", "remoteglm.eval", "remoteglm.commands.convert",
    "remoteglm.commands.quantize", "remoteglm.train.merge", "remoteglm.train.finetune",
]


@pytest.mark.parametrize("module", HELP)
def test_every_checkpoint_command_has_the_flag(module, capsys):
    import importlib

    mod = importlib.import_module(module if module != "remoteglm.eval" else "remoteglm.eval.evaluate")
    if hasattr(mod, "build_parser"):
        text = mod.build_parser().format_help()
    else:
        with pytest.raises(SystemExit):
            mod.main(["--help"])
        text = capsys.readouterr().out
    assert "--trust_checkpoint" in text


def test_commands_refuse_and_trust(tiny_checkpoint, tmp_path):
    marker = tmp_path / "marker"
    d = poisoned_copy(tiny_checkpoint, tmp_path / "c", RunsCode(marker))

    def run(module, *args):
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=ENV, capture_output=True, text=True,
                              timeout=180, stdin=subprocess.DEVNULL)

    for module, args in [("remoteglm", ["convert", "--to", "hf", d, tmp_path / "hf"]),
                         ("remoteglm.serve.cli", ["--from_pretrained", d, "--image", ROOT / "tests/fixtures/images/OSBS_029.tif",
                                                  "--prompt", "hi", "--greedy", "--max_new_tokens", "2"])]:
        r = run(module, *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and lines[-1].startswith("error: refused to load") and "--trust_checkpoint" in lines[-1], r.stderr
        assert not marker.exists()
    r = run("remoteglm", "convert", "--to", "hf", d, tmp_path / "hf", "--trust_checkpoint")
    assert r.returncode == 0, r.stderr
    assert marker.exists()
    assert sorted(p.name for p in (tmp_path / "hf").glob("*.safetensors")) == ["model.safetensors"]
