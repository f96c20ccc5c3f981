"""finetune.sh as a user runs it: the command it builds (one machine, several, CPU), its
defaults, bad settings that fail in one line before any model loads, and resume."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"


def sh(env: dict, *args: str, timeout=600) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    e.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env})
    return subprocess.run(["bash", str(ROOT / "finetune.sh"), *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def dry(env: dict, *args: str) -> list[str]:
    r = sh({"DRY_RUN": "1", **env}, *args)
    assert r.returncode == 0, r.stderr
    return shlex.split(r.stdout.strip().splitlines()[-1])


def test_two_node_launch_command(tmp_path, tiny_checkpoint):
    hosts = tmp_path / "hostfile"
    hosts.write_text("# two machines\nnode1 slots=8\nnode2 slots=8\n")
    cmd = dry({"HOSTFILE": str(hosts), "MODEL_DIR": str(tiny_checkpoint)}, "--seed", "7")
    assert cmd[:3] == ["python", "-m", "deepspeed.launcher.runner"]
    assert cmd[cmd.index("--hostfile") + 1] == str(hosts)
    assert cmd[cmd.index("--master_addr") + 1] == "node1"  # every node reaches the first host
    assert cmd[cmd.index("--master_port") + 1] == "29500"
    assert "--num_gpus" not in cmd  # all slots of the hostfile
    assert cmd[cmd.index("--no_local_rank") + 1] == "finetune_visualglm.py"
    assert cmd[-2:] == ["--seed", "7"]
    cmd = dry({"HOSTFILE": str(hosts), "MODEL_DIR": str(tiny_checkpoint), "MASTER_ADDR": "10.0.0.5",
               "MASTER_PORT": "6000", "NUM_GPUS": "4"})
    assert cmd[cmd.index("--master_addr") + 1] == "10.0.0.5" and cmd[cmd.index("--master_port") + 1] == "6000"
    assert cmd[cmd.index("--num_gpus") + 1] == "4"
    r = sh({"DRY_RUN": "1", "HOSTFILE": str(tmp_path / "nope")})
    assert r.returncode == 2 and "HOSTFILE" in r.stderr


def test_single_machine_and_cpu_commands(tiny_checkpoint):
    cmd = dry({"NUM_GPUS": "2", "MODEL_DIR": str(tiny_checkpoint)})
    assert cmd[:3] == ["python", "-m", "deepspeed.launcher.runner"]
    assert cmd[cmd.index("--master_addr") + 1] == "127.0.0.1" and cmd[cmd.index("--num_gpus") + 1] == "2"
    cmd = dry({"NUM_GPUS": "0", "MODEL_DIR": str(tiny_checkpoint), "SAVE_INTERVAL": "25", "KEEP_CHECKPOINTS": "0"})
    assert cmd[:2] == ["python", "finetune_visualglm.py"]
    assert cmd[cmd.index("--save_interval") + 1] == "25" and cmd[cmd.index("--keep_checkpoints") + 1] == "0"
    r = sh({"DRY_RUN": "1", "NUM_GPUS": "two", "MODEL_DIR": str(tiny_checkpoint)})
    assert r.returncode == 2 and "NUM_GPUS" in r.stderr


def test_validation_data_defaults(tmp_path, tiny_checkpoint):
    """A real model never gets the bundled 2-image sample as its validation set."""
    train = tmp_path / "ucm_train.json"
    train.write_text("[]")
    cmd = dry({"NUM_GPUS": "0", "MODEL_DIR": str(tiny_checkpoint), "TRAIN_DATA": str(train)})
    assert "--valid_data" not in cmd
    (tmp_path / "ucm_val.json").write_text("[]")
    cmd = dry({"NUM_GPUS": "0", "MODEL_DIR": str(tiny_checkpoint), "TRAIN_DATA": str(train)})
    assert cmd[cmd.index("--valid_data") + 1] == str(tmp_path / "ucm_val.json")
    cmd = dry({"NUM_GPUS": "0", "MODEL_DIR": str(tiny_checkpoint), "TRAIN_DATA": str(train), "VALID_DATA": ""})
    assert "--valid_data" not in cmd
    cmd = dry({"NUM_GPUS": "0"})  # the tiny default job: the sample's own held-out file
    assert cmd[cmd.index("--valid_data") + 1] == "data/sample/sample_val.json"


def test_bad_settings_fail_in_one_line_before_loading(tmp_path, tiny_checkpoint):
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([{"img": "nowhere/a.png", "prompt": "p", "label": "l"}] * 3))
    base = {"NUM_GPUS": "0", "MODEL_DIR": str(tiny_checkpoint), "SAVE_DIR": str(tmp_path / "out"), "VALID_DATA": ""}
    cases = [({"BATCH_SIZE": "0"}, "--batch_size must be"), ({"TRAIN_ITERS": "0"}, "--train_iters must be"),
             ({"LAYER_RANGE": "0 99"}, "indices 0..1"), ({"TRAIN_DATA": str(missing)}, "none of the 3 train images exist"),
             ({"LORA_RANK": "-1"}, "--lora_rank must be")]
    with ThreadPoolExecutor(len(cases)) as pool:  # each fails in its own process before loading: side by side
        results = list(pool.map(lambda case: sh({**base, **case[0]}), cases))
    for (env, expected), r in zip(cases, results):
        assert r.returncode == 2, (env, r.stdout, r.stderr)
        assert expected in r.stderr and "Traceback" not in r.stderr, (env, r.stderr)
        assert "image features" not in r.stderr and "train data:" not in r.stderr  # nothing was loaded
        assert ">> done" not in r.stdout


def test_resume_errors_stop_finetune_sh(tmp_path, tiny_checkpoint):
    base = {"NUM_GPUS": "0", "MODEL_DIR": str(tiny_checkpoint), "SAVE_DIR": str(tmp_path / "out"), "VALID_DATA": ""}
    cases = [("", "is 'empty'"), ("garbled\x00", "should hold a step number"), ("7", "names step 7 but"),
             ("5", "step 5 is incomplete")]
    runs = []
    for i, (latest, _) in enumerate(cases):  # a run folder per case, so the cases run side by side
        run = tmp_path / f"run{i}"
        (run / "5").mkdir(parents=True)
        (run / "latest").write_text(latest)
        runs.append(run)
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda run: sh(base, "--resume", str(run)), runs))
    for (latest, expected), r in zip(cases, results):
        assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr, (latest, r.stderr)
        assert ">> done" not in r.stdout and not (tmp_path / "out" / "LAST_RUN").exists()


def test_resume_outside_save_dir_demos_that_run(tmp_path, tiny_checkpoint):
    first = {"NUM_GPUS": "0", "MODEL_DIR": str(tiny_checkpoint), "SAVE_DIR": str(tmp_path / "a"), "VALID_DATA": "",
             "TRAIN_ITERS": "4", "BATCH_SIZE": "2", "LR": "1e-3", "SAVE_INTERVAL": "2"}
    r = sh(first, "--num_workers", "0", "--feature_cache", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run = Path((tmp_path / "a" / "LAST_RUN").read_text().strip())
    r = sh({**first, "SAVE_DIR": str(tmp_path / "b"), "TRAIN_ITERS": "6"}, "--num_workers", "0",
           "--feature_cache", str(tmp_path / "cache"), "--resume", str(run))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert Path((tmp_path / "b" / "LAST_RUN").read_text().strip()) == run
    assert f"--from_pretrained {run}" in r.stdout  # the closing line names the resumed run
    s = json.loads((run / "train_summary.json").read_text())
    assert [x[0] for x in s["losses"]] == list(range(1, 7)) and s["resumed_from"] == 4
    assert not list((tmp_path / "b").glob("finetune-*"))


def test_a_folder_no_engine_can_load_is_one_line_before_any_banner(tmp_path):
    """A missing folder, or an HF folder of a model type we do not support, gets its one error line
    first (it used to be announced as a "visualglm engine" fine-tune and fail later)."""
    unsupported = tmp_path / "qwen3-moe"
    unsupported.mkdir()
    (unsupported / "config.json").write_text(json.dumps({"model_type": "qwen3_vl_moe"}))
    for model_dir, said in ((tmp_path / "nope", "nope"), (unsupported, "'qwen3_vl_moe' is not supported yet")):
        for dry_run in ("0", "1"):
            r = sh({"MODEL_DIR": str(model_dir), "NUM_GPUS": "0", "SAVE_DIR": str(tmp_path / "out"), "DRY_RUN": dry_run})
            assert r.returncode == 2, r.stdout + r.stderr
            assert "engine" not in r.stdout and "fine-tuning" not in r.stdout, r.stdout
            errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
            assert len(errors) == 1 and said in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
