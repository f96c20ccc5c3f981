"""Fine-tuning every transformers family through finetune_visualglm.py (the one fine-tune
command; the family trains with the HF Trainer): LoRA fits the sample, QLoRA and DoRA train, a 2-rank DeepSpeed ZeRO-2 run killed with
SIGKILL resumes to the same losses as an uninterrupted one, merged equals unmerged, bad settings
fail before loading."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from remoteglm.errors import RemoteGLMError
from remoteglm.registry import family_named, family_of
from tests.families.conftest import HF_FAMILIES, ROOT, TRAIN, VALID, env, train_images


def _mean_f1(path) -> float:
    from remoteglm.eval.metrics import char_f1
    from remoteglm.serve.loading import load_engine
    from remoteglm.eval.demo import image_labels

    engine, _ = load_engine(path)
    scores = [char_f1(engine.reply(str(im), "描述这张图片。", do_sample=False, max_new_tokens=40).text,
                      image_labels(im, [TRAIN])) for im in train_images()]
    return sum(scores) / len(scores)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_lora_fits_the_sample(hf_bases, hf_runs, family):
    run_dir = hf_runs[family]
    s = json.loads((run_dir / "train_summary.json").read_text())
    assert s["steps"] == 150 and s["family"] == family
    losses = [v[0] for _, v in sorted(_losses(run_dir).items())]
    assert len(losses) == 150 and sum(losses[-10:]) < 0.75 * sum(losses[:10]), losses  # the loss falls
    assert [e[0] for e in s["eval_losses"]] == [75, 150] and s["eval_loss"] == s["eval_losses"][-1][1]
    assert (run_dir / "latest").read_text().strip() == "checkpoint-150"
    assert list(run_dir.glob("runs/*/events.out.tfevents.*")), "no TensorBoard log"
    before, after = _mean_f1(hf_bases[family]), _mean_f1(run_dir)
    assert after > before + 0.2, (before, after)  # answers on the training images move to their own labels


def _losses(run_dir: Path) -> dict[int, tuple]:
    state = json.loads((run_dir / (run_dir / "latest").read_text().strip() / "trainer_state.json").read_text())
    return {h["step"]: (h["loss"], h["learning_rate"], h.get("grad_norm")) for h in state["log_history"] if "loss" in h}


def _two_ranks(base: Path, save: Path, *extra) -> list[str]:
    """finetune_visualglm.py on 2 CPU ranks through the DeepSpeed launcher (gloo), as finetune.sh
    starts several GPUs, with DeepSpeed ZeRO-2 itself."""
    from remoteglm.compat import free_port

    return [sys.executable, "-m", "deepspeed.launcher.runner", "--master_addr", "127.0.0.1", "--master_port",
            str(free_port()), "--num_gpus", "2", "--no_local_rank", "finetune_visualglm.py", "--from_pretrained", str(base),
            "--train_data", str(TRAIN), "--save", str(save), "--lr", "1e-2", "--batch_size", "2", "--log_interval", "1",
            "--train_iters", "16", "--save_interval", "4", "--keep_checkpoints", "2", "--gradient_accumulation_steps", "2",
            "--zero_stage", "2", *map(str, extra)]


def test_two_rank_zero2_run_killed_with_sigkill_resumes_to_the_uninterrupted_losses(hf_bases, tmp_path):
    """Both ranks share one run folder, and after a SIGKILL of the launcher and its ranks every
    step (before the kill and after the resume) has the uninterrupted run's loss, learning rate
    and grad norm."""
    base = hf_bases["glm4v"]
    e = {**env(), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(_two_ranks(base, tmp_path / "whole"), cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (whole,) = [d for d in (tmp_path / "whole").iterdir() if d.is_dir()]  # one run folder for both ranks
    assert json.loads((whole / "train_summary.json").read_text())["world_size"] == 2
    save = tmp_path / "killed"
    p = subprocess.Popen(_two_ranks(base, save), cwd=ROOT, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    end = time.monotonic() + 300
    while time.monotonic() < end and p.poll() is None:
        latest = list(save.glob("*/latest"))
        if latest and latest[0].read_text().strip() not in ("", "checkpoint-4"):
            break
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)  # the launcher and both ranks at once
    p.wait()
    run_dir = Path((save / "LAST_RUN").read_text().strip())
    killed_at = int((run_dir / "latest").read_text().strip().split("-")[1])
    assert 4 <= killed_at < 16, killed_at
    r = subprocess.run(_two_ranks(base, save, "--resume", run_dir), cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    a, b = _losses(whole), _losses(run_dir)
    assert sorted(b) == list(range(1, 17))
    assert [a[s] for s in range(1, 17)] == [b[s] for s in range(1, 17)]
    assert len(list(run_dir.glob("checkpoint-*"))) == 2  # --keep_checkpoints


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_merged_equals_unmerged_and_loads_without_peft(hf_runs, family, tmp_path):
    from transformers import AutoModelForImageTextToText

    from remoteglm.model.hf_folder import chat_messages, load_hf

    from remoteglm.train.merge import main

    out = tmp_path / "merged"
    assert main([str(hf_runs[family]), str(out)]) == 0  # python -m remoteglm.train.merge RUN OUT, in-process
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    assert family_of(out).name == family  # a merged folder is the family's plain folder
    unmerged, proc = load_hf(hf_runs[family], family_named(family))
    merged = AutoModelForImageTextToText.from_pretrained(out, local_files_only=True).eval()
    im = proc.images([Image.open(train_images()[0]).convert("RGB")])
    ids = proc.encode(proc.render(chat_messages("描述这张图片。"), True), im["image_grid_thw"])
    inp = dict(input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor([proc.token_types(ids)]), **im)
    with torch.no_grad():
        a, b = unmerged(**inp).logits, merged(**inp).logits
    assert (a - b).abs().max().item() < 1e-4
    with pytest.raises(Exception):
        from remoteglm.train.merge import merge_checkpoint

        merge_checkpoint(hf_runs[family], out)  # never over an existing folder


def test_qlora_and_dora_train(hf_bases, tmp_path):
    from remoteglm.train.finetune import main  # finetune_visualglm.py's main, in-process

    def tune(base, save, *extra):
        assert main(["--from_pretrained", str(base), "--train_data", str(TRAIN), "--save", str(save), "--lr", "1e-2",
                     "--batch_size", "4", "--log_interval", "1", "--train_iters", "20", *extra]) == 0
        return Path((save / "LAST_RUN").read_text().strip())

    # evaluations between training steps: on AVX-512-BF16 CPUs bitsandbytes repacks NF4 weights on their
    # first eval-mode forward, and training after that used to fail (pinned in remoteglm.compat)
    q = tune(hf_bases["qwen2_5_vl"], tmp_path / "q", "--use_qlora", "--valid_data", str(VALID), "--eval_interval", "5",
             "--eval_iters", "1")
    d = tune(hf_bases["glm4v"], tmp_path / "d", "--use_dora", "--tune_merger")
    for r in (q, d):
        s = json.loads((r / "train_summary.json").read_text())
        tail = [x[1] for x in s["losses"][-10:]]
        assert s["losses"][-1][1] < s["first_loss"] == s["losses"][0][1], s  # the last step's loss is below the first's
        assert s["last_loss"] == pytest.approx(sum(tail) / len(tail))  # the summary's last_loss: the last 10 steps' mean
    sq = json.loads((q / "train_summary.json").read_text())
    assert sq["qlora"] and len(sq["eval_losses"]) == 4 and sq["eval_loss"] == sq["eval_losses"][-1][1] and sq["steps"] == 20
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["use_dora"] and cfg["modules_to_save"] == ["merger"]
    from remoteglm.serve.loading import load_engine

    engine, _ = load_engine(q, quant=4)  # the QLoRA adapter on an NF4 base, as trained
    assert engine.quant == "int4 (NF4)"
    assert engine.reply(str(train_images()[0]), "描述这张图片。", do_sample=False, max_new_tokens=8).finish_reason


def test_only_complete_checkpoints_are_resumed(hf_runs, tmp_path):
    from remoteglm.train.hf_trainer import resume_point
    from remoteglm.train.hf_trainer import run as hf_run

    r = tmp_path / "run"
    shutil.copytree(hf_runs["glm4v"], r)
    assert resume_point(r).name == "checkpoint-150"
    half = r / "checkpoint-225"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"\0" * 10)  # killed while writing: no completion mark
    (r / "latest").write_text("checkpoint-225\n")
    with pytest.raises(RemoteGLMError, match="not a complete checkpoint; complete checkpoints: checkpoint-75, checkpoint-150"):
        resume_point(r)
    (r / "latest").unlink()
    with pytest.raises(RemoteGLMError, match="'latest' is missing"):
        resume_point(r)
    (r / "latest").write_text("checkpoint-150\n")

    base = json.loads((r / "remoteglm_base.json").read_text())["base"]
    before = {f: f.stat().st_mtime_ns for f in r.rglob("*") if f.is_file()}
    hf_run(*_resolved("--from_pretrained", base, "--train_data", str(TRAIN), "--batch_size", "4", "--train_iters", "150",
                      "--resume", str(r)))
    assert before == {f: f.stat().st_mtime_ns for f in r.rglob("*") if f.is_file()}  # a finished run is left as it is
    for bad, said in ((["--lora_rank", "4"], "--lora_rank 8, not 4"), (["--batch_size", "2"], "--batch_size 4, not 2"),
                      (["--use_dora"], "--use_dora False, not True")):
        with pytest.raises(RemoteGLMError, match=said):  # a resume that could not repeat the run: before loading
            hf_run(*_resolved("--from_pretrained", base, "--train_data", str(TRAIN), "--batch_size", "4", "--train_iters",
                              "300", "--resume", str(r), *bad))  # steps left to run: the settings are compared


def _resolved(*argv):
    """(options, family) as the fine-tune command makes them: parsed, the family's recipe filled in, checked."""
    from remoteglm.train.options import build_parser, resolve, validate

    opts = build_parser().parse_args(list(argv))
    fam = family_of(opts.from_pretrained)
    resolve(opts, fam)
    validate(opts)
    return opts, fam


@pytest.mark.parametrize("bad, message", [
    (["--max_pixels", "100"], "--max_pixels must be at least 784"),
    (["--lr", "0"], "--lr and --lora_alpha must be > 0"),
    (["--min_pixels", "9000", "--max_pixels", "5000"], "is more than --max_pixels"),
    (["--train_iters", "0"], "--train_iters must be a whole number"),
    (["--resume", "/nonexistent/run"], "no such run folder"),
    (["--keep_checkpoints", "-1"], "--keep_checkpoints must be >= 0"),
    (["--layer_range", "0", "7"], "the language model has layers 0-1"),
])
def test_bad_settings_fail_in_one_line_before_the_model_loads(hf_bases, tmp_path, bad, message, capsys):
    """Through finetune_visualglm.py's main (in-process: the same code path as the script)."""
    from remoteglm.train.finetune import main

    rc = main(["--from_pretrained", str(hf_bases["glm4v"]), "--train_data", str(TRAIN), "--save", str(tmp_path), *bad])
    out = capsys.readouterr()
    assert rc == 2, out.err[-2000:]
    lines = [ln for ln in out.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], out.err[-2000:]
    assert "Traceback" not in out.err and "Loading weights" not in out.err + out.out
    assert not list(tmp_path.iterdir())  # no run folder was made


def test_a_train_image_that_is_a_validation_image_is_refused_before_the_model_loads(hf_bases, tmp_path, capsys):
    """The transformers engine shares the VisualGLM one's leak check: content, not file names."""
    from remoteglm.train.finetune import main

    valid = json.loads(VALID.read_text(encoding="utf-8"))
    first = json.loads(TRAIN.read_text(encoding="utf-8"))[0]
    (tmp_path / "copy.png").write_bytes((TRAIN.parent / first["img"]).read_bytes())  # renamed, another folder
    valid.append({**first, "img": str(tmp_path / "copy.png")})
    for r in valid:
        r["img"] = str((VALID.parent / r["img"]).resolve())
    (tmp_path / "val.json").write_text(json.dumps(valid, ensure_ascii=False), encoding="utf-8")
    rc = main(["--from_pretrained", str(hf_bases["qwen2_5_vl"]), "--train_data", str(TRAIN), "--valid_data",
               str(tmp_path / "val.json"), "--save", str(tmp_path / "runs")])
    out = capsys.readouterr()
    lines = [ln for ln in out.err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "1 train image(s)" in lines[0] and "copy.png" in lines[0], out.err[-2000:]
    assert "Traceback" not in out.err and "Loading weights" not in out.err + out.out
    assert not (tmp_path / "runs").exists()


def test_lora_goes_on_the_language_model_layers_asked_for(hf_bases):
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from remoteglm.train.hf_trainer import lora_config

    for extra, layers in (([], {"0", "1"}), (["--layer_range", "1"], {"1"})):
        opts, _ = _resolved("--from_pretrained", str(hf_bases["qwen2_5_vl"]), "--train_data", "y", *extra)
        model = AutoModelForImageTextToText.from_pretrained(hf_bases["qwen2_5_vl"], local_files_only=True)
        names = [n for n, _ in get_peft_model(model, lora_config(opts)).named_modules() if n.endswith("lora_A")]
        assert names and all(".language_model.layers." in n for n in names)  # never the vision tower
        assert {n.split(".layers.")[1].split(".")[0] for n in names} == layers
        assert len(names) == 7 * len(layers)  # q k v o gate up down


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_quantising_a_transformers_folder_says_how(hf_bases, family, tmp_path, capsys):
    from remoteglm.commands.quantize import main  # python -m remoteglm quantize, in-process

    assert main([str(hf_bases[family]), str(tmp_path / "q"), "--bits", "4"]) == 2
    assert "pass --quant 4 to cli_demo.py" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_finetune_sh_picks_the_engine_and_its_defaults(hf_bases, tmp_path):
    """The family's recipe: a real-size folder (the tiny one with a published hidden size in its
    config.json: a dry run reads no weights) gets the real recipe, a tiny one the minute recipe."""
    real = tmp_path / "real"
    shutil.copytree(hf_bases["qwen2_5_vl"], real)
    cfg = json.loads((real / "config.json").read_text())
    cfg["text_config"]["hidden_size"] = 3584
    (real / "config.json").write_text(json.dumps(cfg))
    for base, want in ((real, ("1", "8", 16.0, 1e-4)), (hf_bases["qwen2_5_vl"], ("4", "8", 16.0, 1e-2))):
        e = dict(env(), MODEL_DIR=str(base), DRY_RUN="1", SAVE_DIR=str(tmp_path), NUM_GPUS="0")
        p = subprocess.run(["bash", "finetune.sh"], cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        cmd = p.stdout.split()
        assert cmd[:2] == ["python", "finetune_visualglm.py"]
        opt = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
        assert (opt["--batch_size"], opt["--lora_rank"], float(opt["--lora_alpha"]), float(opt["--lr"])) == want


@pytest.mark.parametrize("damage, message", [("missing_shard", "shard model-00002-of-00002"), ("truncated", "is truncated")])
def test_damaged_base_fails_in_one_line_and_makes_no_run_folder(hf_bases, tmp_path, damage, message, capsys):
    """The same checks as serving, before anything is created (the run folder used to be made
    before the model loaded, and a missing shard was a 34-line traceback)."""
    from remoteglm.train.finetune import main

    base = tmp_path / "base"
    shutil.copytree(hf_bases["qwen2_5_vl"], base)
    w = base / "model.safetensors"
    if damage == "truncated":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    else:
        w.rename(base / "model-00001-of-00002.safetensors")
        (base / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    save = tmp_path / "runs"
    save.mkdir()
    rc = main(["--from_pretrained", str(base), "--train_data", str(TRAIN), "--save", str(save), "--train_iters", "2"])
    out = capsys.readouterr()
    assert rc == 2, out.err[-2000:]
    lines = [ln for ln in out.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], out.err[-2000:]
    assert "Traceback" not in out.err
    assert not list(save.iterdir())  # no run folder
