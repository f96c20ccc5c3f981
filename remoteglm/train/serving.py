"""What vLLM and SGLang need from a transformers family's folder, and the commands that serve one.

A merged folder (``remoteglm merge RUN DST``) is served as it is::

    config.json                      "architectures": the class name both servers map to their own
                                     implementation (vLLM: vllm/model_executor/models/registry.py,
                                     e.g. "Qwen2_5_VLForConditionalGeneration": ("qwen2_5_vl", ...))
    model-0000k-of-0000n.safetensors + model.safetensors.index.json (one model.safetensors when small)
    chat_template.json | .jinja      the base's real template, where the family's real folder keeps it
    tokenizer files, generation_config.json
    preprocessor_config.json         with the run's min / max pixels: the servers build the image
                                     processor from it (AutoProcessor), so images get the run's tokens
    video_preprocessor_config.json   where the family's real folder has one (GLM-4.1V, Qwen3-VL):
                                     their processors are built with a video processor

An adapter folder (``remoteglm export_adapter RUN DST``) is a plain peft LoRA for
``vllm serve BASE --enable-lora``: vLLM reads ``adapter_config.json`` (vllm/lora/peft_helper.py:
``modules_to_save`` must be None, no DoRA, ``r`` <= ``--max-lora-rank``) and takes each tensor
``base_model.model.<module>.lora_A|lora_B.weight`` whose module's last name is one of the model's
LoRA modules (vllm/lora/lora_model.py ``from_local_checkpoint``). It applies LoRA to the language
model; a LoRA of the vision tower or a fully trained merger is refused here: merge such runs.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json

SHARD_SIZE = "5GB"  # shards of the size the families' published folders use (transformers 4's default)
INDEX = "model.safetensors.index.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
VIDEO_CONFIG = "video_preprocessor_config.json"


def serving_files() -> tuple[str, ...]:
    """The non-weight files a served folder takes from its run / base: the processor files a run
    folder copies (hf_trainer.PROCESSOR_FILES), the video processor's and transformers 5's
    processor_config.json."""
    from remoteglm.train.hf_trainer import PROCESSOR_FILES

    return (*PROCESSOR_FILES, VIDEO_CONFIG, "processor_config.json")
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py MaxLoRARanks
LORA_TENSOR = re.compile(r"^base_model\.model\.(?P<module>.+)\.(lora_A|lora_B)\.weight$")
MAX_LINES = 5  # per kind of problem; the rest is counted


def run_pixels(path: Path, fam) -> tuple[int, int]:
    """(min, max) pixels a folder's images are resized to as its run was trained: the run's record
    (``remoteglm_base.json``), else the folder's own preprocessor_config.json."""
    from remoteglm.model.hf_folder import folder_pixel_range

    lo, hi = fam.serving_pixels(Path(path), None, None)
    flo, fhi = folder_pixel_range(path)
    return lo or flo, hi or fhi


def with_pixels(pc: dict, lo: int, hi: int) -> dict:
    """A preprocessor config resizing into [lo, hi] pixels: ``size`` (transformers 5) and, where the
    file has them, ``min_pixels`` / ``max_pixels`` (Qwen/Qwen2.5-VL-7B-Instruct's own file has only
    these; transformers lets them override ``size``, so both must agree)."""
    out = dict(pc)
    out["size"] = {**(pc.get("size") if isinstance(pc.get("size"), dict) else {}),
                   "shortest_edge": lo, "longest_edge": hi}
    for k, v in (("min_pixels", lo), ("max_pixels", hi)):
        if k in pc:
            out[k] = v
    return out


def vllm_rank(r: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts for an adapter of rank ``r``."""
    for k in VLLM_LORA_RANKS:
        if r <= k:
            return k
    raise RemoteGLMError(f"LoRA rank {r} is above the {VLLM_LORA_RANKS[-1]} vLLM serves; merge the run instead")


def _cap(lines: list[str]) -> list[str]:
    return lines[:MAX_LINES] + ([f"... and {len(lines) - MAX_LINES} more like that"] if len(lines) > MAX_LINES else [])


def index_problems(d: Path) -> list[str]:
    """The safetensors index against its shards: every shard present, every tensor of every shard
    listed, every listed tensor in the shard it names."""
    from safetensors import safe_open

    shards = sorted(d.glob("model-*-of-*.safetensors"))
    if not (d / INDEX).is_file():
        return [f"{len(shards)} weight shards but no {INDEX}: the servers find the shards through it"] if shards else []
    try:
        wmap = read_json(d / INDEX, require_object=True).get("weight_map")
    except RemoteGLMError as e:
        return [str(e)]
    if not isinstance(wmap, dict) or not wmap:
        return [f"{INDEX} has no weight_map"]
    out, unlisted, wrong = [], [], []
    for name in sorted(set(wmap.values()) | {s.name for s in shards}):
        f = d / name
        if not f.is_file():
            out.append(f"{INDEX} names shard {name}, which is missing")
            continue
        with safe_open(str(f), framework="pt") as fh:
            keys = set(fh.keys())
        unlisted += [f"{INDEX} does not list tensor {k} (in {name})" for k in sorted(keys) if wmap.get(k) != name
                     and k not in wmap]
        wrong += [f"{INDEX} puts tensor {k} in {name}, which does not hold it" for k, v in sorted(wmap.items())
                  if v == name and k not in keys]
    return out + _cap(unlisted) + _cap(wrong)


def folder_problems(d: Path, fam) -> list[str]:
    """Everything a merged (or base) folder lacks that vLLM / SGLang need, one line each."""
    from remoteglm.model.hf_folder import check_weights

    out = []
    try:
        cfg = read_json(d / "config.json", require_object=True)
    except RemoteGLMError as e:
        return [str(e)]
    arch = cfg.get("architectures")
    if not isinstance(arch, list) or fam.model_class not in arch:
        out.append(f"config.json: \"architectures\" is {arch!r}, not [\"{fam.model_class}\"]: vLLM and SGLang pick "
                   "the model class by it")
    try:
        check_weights(d)
    except RemoteGLMError as e:
        out.append(str(e))
    out += index_problems(d)
    t = d / fam.template_file
    if not t.is_file():
        out.append(f"no {fam.template_file}: {fam.label}'s real folder keeps its chat template there; copy it from "
                   "the base folder")
    elif t.suffix == ".json":
        try:
            if not isinstance(read_json(t, require_object=True).get("chat_template"), str):
                out.append(f"{t.name} has no \"chat_template\" string")
        except RemoteGLMError as e:
            out.append(str(e))
    if not (d / "tokenizer_config.json").is_file():
        out.append("no tokenizer_config.json: copy the tokenizer files from the base folder")
    if not (d / "tokenizer.json").is_file() and not ((d / "vocab.json").is_file() and (d / "merges.txt").is_file()):
        out.append("no tokenizer.json (nor vocab.json + merges.txt): copy the tokenizer files from the base folder")
    for name, why in (("preprocessor_config.json", "the image processor (and the resolution) is built from it"),
                      ("generation_config.json", "the servers take the stop tokens and sampling defaults from it")):
        if not (d / name).is_file():
            out.append(f"no {name}: {why}")
    if fam.video_processor and not (d / VIDEO_CONFIG).is_file():
        out.append(f"no {VIDEO_CONFIG}: {fam.label}'s processor is built with a {fam.video_processor}")
    return out


def adapter_problems(d: Path, with_base: bool = True) -> list[str]:
    """What keeps ``vllm serve BASE --enable-lora --lora-modules NAME=d`` from taking the adapter
    folder ``d``, one line each (``with_base``: its base folder's problems too)."""
    from remoteglm.model.hf_folder import ADAPTER_CONFIG, adapter_base
    from remoteglm.train.hf_trainer import LORA_TARGETS

    merge = "merge the run instead (python -m remoteglm merge RUN DST) and serve the merged folder"
    try:
        cfg = read_json(d / ADAPTER_CONFIG, require_object=True)
    except RemoteGLMError as e:
        return [str(e)]
    out = []
    if cfg.get("peft_type", "LORA") != "LORA":
        out.append(f"{ADAPTER_CONFIG}: peft_type {cfg.get('peft_type')!r}: vLLM serves LoRA adapters only; {merge}")
    r = cfg.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        out.append(f"{ADAPTER_CONFIG}: \"r\" is {r!r}, not a LoRA rank")
    elif r > VLLM_LORA_RANKS[-1]:
        out.append(f"LoRA rank {r} is above the {VLLM_LORA_RANKS[-1]} vLLM serves; {merge}")
    if cfg.get("use_dora"):
        out.append(f"a DoRA adapter (--use_dora): vLLM does not serve DoRA; {merge}")
    if cfg.get("modules_to_save"):
        out.append(f"modules_to_save {cfg['modules_to_save']} (--tune_merger trains the merger fully): vLLM takes "
                   f"LoRA matrices only; {merge}")
    if cfg.get("bias", "none") != "none":
        out.append(f"bias {cfg['bias']!r}: vLLM serves adapters without bias terms; {merge}")
    w = d / ADAPTER_WEIGHTS
    if not w.is_file():
        out.append(f"no {ADAPTER_WEIGHTS}: vLLM reads the LoRA weights from it")
    else:
        from safetensors import safe_open

        odd, vision = [], []
        with safe_open(str(w), framework="pt") as fh:
            names = list(fh.keys())
        for name in names:
            m = LORA_TENSOR.match(name)
            if m is None:
                if cfg.get("use_dora") or cfg.get("modules_to_save"):
                    continue  # DoRA's magnitudes, the saved modules' weights: said above
                odd.append(f"{ADAPTER_WEIGHTS}: tensor {name} is not a LoRA matrix vLLM reads "
                           "(base_model.model.<module>.lora_A|lora_B.weight); " + merge)
            elif "language_model." not in m["module"] or m["module"].rsplit(".", 1)[-1] not in LORA_TARGETS:
                vision.append(f"LoRA on {m['module']}: vLLM applies LoRA to the language model's projections "
                              f"({', '.join(LORA_TARGETS)}) only; {merge}")
        out += _cap(odd) + _cap(sorted(set(vision)))
    try:
        base = adapter_base(d)
    except RemoteGLMError as e:
        return out + [str(e)]
    if not with_base:
        return out
    from remoteglm.registry import family_of

    out += [f"base {base}: {p}" for p in folder_problems(base, family_of(base))]
    return out


def _json_arg(obj) -> str:
    return shlex.quote(json.dumps(obj, separators=(", ", ": ")))


def serve_commands(model: Path, fam, pixels: tuple[int, int], *, adapter: Path | None = None,
                   rank: int | None = None, name: str = "remoteglm") -> list[str]:
    """The ``vllm serve`` and ``python -m sglang.launch_server`` lines for ``model`` (with
    ``adapter`` as a LoRA of it, which requests then name as their ``model``: ``name``), images at
    the run's ``pixels``. Flags as documented: docs.vllm.ai (engine args ``--limit-mm-per-prompt``,
    ``--mm-processor-kwargs``; LoRA adapters ``--enable-lora --lora-modules NAME=PATH
    --max-lora-rank``), docs.sglang.io (server args ``--mm-process-config``,
    ``--limit-mm-data-per-request``; LoRA serving ``--enable-lora --lora-paths NAME=PATH``)."""
    kw = fam.pixel_kwargs(*pixels)
    q = shlex.quote
    served = model.name if adapter is not None else name
    vllm = [f"vllm serve {q(str(model))}", f"--served-model-name {q(served)}",
            f"--limit-mm-per-prompt {_json_arg({'image': 1})}", f"--mm-processor-kwargs {_json_arg(kw)}"]
    sgl = [f"python -m sglang.launch_server --model-path {q(str(model))}", f"--served-model-name {q(served)}",
           f"--limit-mm-data-per-request {_json_arg({'image': 1})}", f"--mm-process-config {_json_arg({'image': kw})}"]
    if adapter is not None:
        lora = f"{q(name)}={q(str(adapter))}"
        vllm += ["--enable-lora", f"--lora-modules {lora}", f"--max-lora-rank {vllm_rank(rank or 8)}"]
        sgl += ["--enable-lora", f"--lora-paths {lora}"]
    return [" \\\n    ".join(vllm), " \\\n    ".join(sgl)]
