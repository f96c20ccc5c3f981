"""A transformers family's LoRA run as a plain peft adapter folder for ``vllm serve BASE --enable-lora``.

    python -m remoteglm export_adapter checkpoints/finetune-qwen2.5-vl-11-22-10-00 checkpoints/rs-lora

DST holds what vLLM reads (remoteglm.train.serving: ``adapter_config.json`` and
``adapter_model.safetensors``, tensors ``base_model.model.model.language_model.layers.N.<proj>.
lora_A|lora_B.weight``), plus the run's ``remoteglm_base.json`` and tokenizer / template /
processor files, so this toolkit (chat, API, evaluation) loads the folder too, at the run's
resolution, and check_serving compares the run's prompt with the one vLLM builds from the base. ``base_model_name_or_path`` is the
base folder the run was trained on; peft's ``PeftModel.from_pretrained(base_model, DST)`` loads it
as it is. Runs vLLM cannot serve as an adapter (DoRA, --tune_merger, a LoRA of the vision tower)
are refused in one line each: merge those (python -m remoteglm merge RUN DST).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.io import read_json
from remoteglm.options import Parser


def export_adapter(run: str | Path, dst: str | Path) -> Path:
    """Write ``run``'s adapter to ``dst`` for vLLM (checked first; nothing is written on a problem)."""
    from remoteglm.io import write_json_atomic
    from remoteglm.model.hf_folder import ADAPTER_CONFIG, BASE_RECORD, adapter_base
    from remoteglm.train.hf_trainer import PROCESSOR_FILES
    from remoteglm.train.serving import ADAPTER_WEIGHTS, adapter_problems

    run, dst = Path(run).expanduser(), Path(dst).expanduser()
    if not (run / ADAPTER_CONFIG).is_file():
        raise RemoteGLMError(f"{run} is not a LoRA run folder of a transformers family (no {ADAPTER_CONFIG})")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise RemoteGLMError(f"{dst} already exists and is not empty; choose a new output folder")
    problems = adapter_problems(run, with_base=False)  # the base is the user's download: check_serving reports it
    if problems:
        raise RemoteGLMError(f"{run} cannot be served as a vLLM LoRA adapter: " + "; ".join(dict.fromkeys(problems)))
    base = adapter_base(run).resolve()
    cfg = read_json(run / ADAPTER_CONFIG, require_object=True)
    cfg.update(base_model_name_or_path=str(base), inference_mode=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_json_atomic(tmp / ADAPTER_CONFIG, cfg, indent=2)
    shutil.copyfile(run / ADAPTER_WEIGHTS, tmp / ADAPTER_WEIGHTS)
    for f in PROCESSOR_FILES:  # what the run trained with: check_serving compares it with what vLLM renders
        if (run / f).is_file():
            shutil.copyfile(run / f, tmp / f)
    rec = read_json(run / BASE_RECORD, require_object=True) if (run / BASE_RECORD).is_file() else {}
    write_json_atomic(tmp / BASE_RECORD, {**rec, "base": str(base), "exported_from": str(run.resolve())})
    if dst.exists():
        dst.rmdir()
    tmp.replace(dst)
    return dst


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m remoteglm export_adapter", description=__doc__.split("\n\n")[0],
                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a transformers family's LoRA run folder (adapter_config.json, remoteglm_base.json)")
    ap.add_argument("dst", help="new folder for the adapter")
    a = ap.parse_args(argv)
    out = export_adapter(a.run, a.dst)
    print(f"adapter written to {out}")
    print(f"check it and get the vLLM command: python -m remoteglm check_serving {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
