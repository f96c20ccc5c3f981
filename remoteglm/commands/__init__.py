"""``remoteglm JOB ...``: one console entry for every job (declared in pyproject.toml). Each job
is the ``main`` of the module that owns it; the top-level scripts of the design card
(translation_en2zh.py, finetune_visualglm.py, cli_demo.py, web_demo.py, evaluate.py) are shims
for the same functions.

    remoteglm translate --help        remoteglm finetune --from_pretrained DIR --train_data X.json
    remoteglm chat --from_pretrained DIR
"""

from __future__ import annotations

import importlib
import sys

# job -> (module, what it does); modules are imported only for the job that runs
JOBS = {
    "translate": ("remoteglm.data.cli", "English captions -> checked Chinese dataset (translation_en2zh.py)"),
    "import": ("remoteglm.data.importers", "RSVQA, scene folders, detection / VRSBench / RSGPT / RS-GPT4V sets, annotated scenes -> records"),
    "export": ("remoteglm.commands.export", "records -> LLaMA-Factory / ms-swift / Qwen fine-tune files (boxes in the family's form)"),
    "import_chat": ("remoteglm.commands.import_chat", "LLaMA-Factory / ms-swift / Qwen / OpenAI chat files -> records"),
    "finetune": ("remoteglm.train.finetune", "LoRA / QLoRA / DoRA fine-tuning of any family (finetune.sh)"),
    "merge": ("remoteglm.train.merge", "fold a LoRA run into plain weights (transformers families: a folder vLLM / SGLang load)"),
    "export_adapter": ("remoteglm.train.export_adapter", "a transformers family's LoRA run as a plain peft adapter for vllm --enable-lora"),
    "check_serving": ("remoteglm.commands.check_serving", "can vLLM / SGLang serve this merged folder or adapter as trained? their commands"),
    "chat": ("remoteglm.serve.cli", "chat in the terminal (cli_demo.py)"),
    "web": ("remoteglm.serve.web", "the gradio web demo (web_demo.py)"),
    "api": ("remoteglm.serve.api", "the OpenAI-compatible API server"),
    "eval": ("remoteglm.eval.evaluate", "score checkpoints on a held-out split, HTML report (evaluate.py)"),
    "quantize": ("remoteglm.commands.quantize", "save an int4 / int8 copy of a VisualGLM checkpoint"),
    "convert": ("remoteglm.commands.convert", "VisualGLM sat <-> HF layout"),
    "tiny": ("remoteglm.commands.tiny", "make a tiny random model of a family (tests, trying the pipeline)"),
    "recipe": ("remoteglm.commands.recipe", "the fine-tune defaults a model folder's family gives (finetune.sh)"),
    "scene": ("remoteglm.commands.scene", "answer a whole GeoTIFF / JP2 scene tile by tile -> GeoJSON, quicklook, summary"),
}


def usage() -> str:
    width = max(map(len, JOBS))
    rows = "\n".join(f"  {job:<{width}}  {what}" for job, (_, what) in JOBS.items())
    return f"usage: remoteglm JOB [options]   (remoteglm JOB --help for a job's options)\n\njobs:\n{rows}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    job = JOBS.get(argv[0])
    if job is None:
        print(f"error: unknown job {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    return importlib.import_module(job[0]).main(argv[1:])
