"""The family seam (``remoteglm.registry``): which family a folder is, one line for a folder no
family loads, a family registered from outside the package served and given a recipe by the
stages without any other edit, the one fine-tune option set, and the one console entry."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from remoteglm.errors import RemoteGLMError
from remoteglm.registry import Family, families, family_of, register, unregister
from tests.families.conftest import ALL_FAMILIES, ROOT, TRAIN, env


def _one_line(path) -> str:
    with pytest.raises(RemoteGLMError) as e:
        family_of(path)
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


def test_every_builtin_family_is_registered():
    # written out by hand: a family module that stops registering itself fails here
    assert {"visualglm", "qwen2_5_vl", "glm4v", "qwen3_vl"} <= set(ALL_FAMILIES)
    assert ALL_FAMILIES[-1] == "visualglm"  # it claims any checkpoint layout to explain it: asked last


def test_each_tiny_folder_and_run_folder_names_its_family(family_bases, hf_runs):
    for name, d in family_bases.items():
        assert family_of(d).name == name
    for name, run in hf_runs.items():
        assert family_of(run).name == name  # a LoRA run folder: its adapter's base says
    assert family_of(family_bases["glm4v"]).label == "GLM-4.1V"


def test_a_folder_no_family_loads_is_one_line(hf_bases, tmp_path):
    assert "checkpoint not found" in _one_line(tmp_path / "missing")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0" * 16)
    assert "is a file" in _one_line(f)
    odd = tmp_path / "moe"
    shutil.copytree(hf_bases["qwen2_5_vl"], odd)
    cfg = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen3_vl_moe"}))
    assert "not supported yet" in _one_line(odd)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    assert "not a model folder here" in _one_line(adapter)


# ---- a family from outside the package -------------------------------------------------------------
MARKER = "DUMMY_MODEL"


class EchoEngine:
    """Answers every question with the question, upper-cased."""

    def __init__(self, name, max_new_tokens):
        self.name, self.max_new_tokens = name, max_new_tokens

    def reply(self, image, query, history=None, **gen):
        return query.upper()


class DummyFamily(Family):
    """Claims folders holding a MARKER file; everything else is its own toy code."""

    name = "dummy"
    label = "Dummy-VL"
    tiny_dir = "checkpoints/dummy-tiny"
    train_options = frozenset({"use_dora"})
    priority = 5

    def detect(self, folder: Path) -> bool:
        return (folder / MARKER).is_file()

    def check(self, path: Path) -> None:
        if not (path / MARKER).read_text().startswith("dummy"):
            raise RemoteGLMError(f"{path}: damaged dummy marker")

    def load_engine(self, path, **opts):
        return EchoEngine(opts["name"], opts["max_new_tokens"]), "0.0 GiB"

    def recipe(self, path, lora_rank=None):
        rank = lora_rank or 3
        return {"train_iters": 7, "batch_size": 2, "lr": 0.5, "lora_rank": rank, "lora_alpha": 2.0 * rank,
                "lora_dropout": 0.0, "num_workers": 0, "experiment_name": "finetune-dummy",
                "demo_image": "x.png", "threads": 1}

    def finetune(self, opts):
        raise AssertionError("the test never asks the dummy family for this")

    def merge(self, src, dst, dtype=None, tokenizer=None):
        raise AssertionError("the test never asks the dummy family for this")

    def quantize(self, src, dst, bits, **opts):
        raise AssertionError("the test never asks the dummy family for this")

    def make_tiny(self, out, seed=0, pretrain_steps=None, **opts):
        out.mkdir(parents=True)
        (out / MARKER).write_text(f"dummy seed {seed}")
        return out


@pytest.fixture
def dummy():
    fam = register(DummyFamily())
    try:
        yield fam
    finally:
        unregister(fam.name)


def _recipe(capsys, *argv) -> dict:
    from remoteglm.commands.recipe import main

    assert main(list(map(str, argv))) == 0
    return dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())


def test_a_registered_family_is_served_and_gives_its_recipe_without_other_edits(dummy, tmp_path, capsys):
    from remoteglm.serve.loading import check_checkpoint, load_engine

    d = tmp_path / "my-dummy"
    d.mkdir()
    (d / MARKER).write_text("dummy")
    assert family_of(d) is dummy and check_checkpoint(d) == "dummy"
    engine, memory = load_engine(d, max_new_tokens=9)
    assert (engine.name, engine.max_new_tokens, memory) == ("my-dummy", 9, "0.0 GiB")
    assert engine.reply(None, "hello") == "HELLO"
    r = _recipe(capsys, d, "--lora_rank", "4")
    assert (r["RECIPE_FAMILY"], r["RECIPE_FAMILY_LABEL"], r["RECIPE_TRAIN_ITERS"], r["RECIPE_BATCH_SIZE"]) == (
        "dummy", "Dummy-VL", "7", "2")
    assert (r["RECIPE_LR"], r["RECIPE_LORA_RANK"], r["RECIPE_LORA_ALPHA"], r["RECIPE_THREADS"]) == ("0.5", "4", "8", "1")
    # its conventional tiny folder is made on first use, as finetune.sh asks
    tiny = tmp_path / "checkpoints" / "dummy-tiny"
    assert _recipe(capsys, tiny, "--make_tiny")["RECIPE_FAMILY"] == "dummy"
    assert (tiny / MARKER).read_text() == "dummy seed 0"
    (d / MARKER).write_text("broken")
    with pytest.raises(RemoteGLMError, match="damaged dummy marker"):
        check_checkpoint(d)


def test_an_unregistered_family_is_gone(dummy, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / MARKER).write_text("dummy")
    assert family_of(d) is dummy
    unregister("dummy")
    assert "dummy" not in [f.name for f in families()]
    assert "is not a checkpoint directory" in _one_line(d)


# ---- the one fine-tune option set --------------------------------------------------------------------
def _foreign_option(name: str) -> list[str]:
    """An option another registered family takes and ``name`` does not, as argv."""
    from remoteglm.train.options import build_parser

    fams = {f.name: f for f in families()}
    theirs = sorted(set().union(*(f.train_options for f in fams.values())) - fams[name].train_options,
                    key=lambda o: (o not in ("use_dora", "train_qformer"), o))  # the familiar ones first
    assert theirs, f"every option is {name}'s"
    action = next(a for a in build_parser()._actions if a.dest == theirs[0])
    return [action.option_strings[0]] + ([] if action.nargs == 0 else ["1000"])


def test_an_option_of_another_family_is_refused_in_one_line_before_anything_loads(family_bases, tmp_path):
    """``finetune_visualglm.py`` with e.g. --use_dora on a VisualGLM folder or --train_qformer on a
    Qwen2.5-VL one: exit 2, one error line naming the option and the family, no run folder."""
    assert _foreign_option("visualglm") == ["--use_dora"] and _foreign_option("qwen2_5_vl") == ["--train_qformer"]
    procs = {}
    for name in ALL_FAMILIES:
        extra = _foreign_option(name)
        cmd = [sys.executable, "finetune_visualglm.py", "--from_pretrained", str(family_bases[name]), "--train_data",
               str(TRAIN), "--save", str(tmp_path / name), *extra]
        procs[name] = extra[0], subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True)
    labels = {f.name: f.label for f in families()}
    for name, (flag, p) in procs.items():
        out, err = p.communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert p.returncode == 2, err[-2000:]
        assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0] and labels[name] in lines[0], err
        assert "Loading" not in out + err and not (tmp_path / name).exists()


def test_every_family_refuses_data_whose_images_do_not_exist_before_anything_loads(family_bases, tmp_path):
    """The one data preflight: a training file none of whose images exist is one line for every
    family (the transformers families used to go on to load the model), with no run folder."""
    missing = tmp_path / "missing_train.json"
    missing.write_text(json.dumps([{"img": "nowhere/a.png", "prompt": "描述这张图片。", "label": "农田。"}] * 3),
                       encoding="utf-8")
    procs = {name: subprocess.Popen([sys.executable, "finetune_visualglm.py", "--from_pretrained", str(family_bases[name]),
                                     "--train_data", str(missing), "--save", str(tmp_path / name)], cwd=ROOT, env=env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ALL_FAMILIES}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert p.returncode == 2 and len(lines) == 1 and "none of the 3 train images exist" in lines[0], (name, err)
        assert "Loading" not in out + err and not (tmp_path / name).exists()


# ---- the console entry ---------------------------------------------------------------------------------
def test_the_console_entry_lists_the_jobs_and_each_job_has_its_help():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "remoteglm", *args], cwd=ROOT, env=env(), capture_output=True,
                              text=True, timeout=120)

    r = run("--help")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ")}
    assert {"translate", "import", "finetune", "merge", "chat", "web", "api", "eval", "quantize", "convert"} <= rows
    r = run("chat", "--help")
    assert r.returncode == 0 and "--from_pretrained" in r.stdout, r.stderr
    r = run("nonsense")
    assert r.returncode == 2 and "unknown job 'nonsense'" in r.stderr
