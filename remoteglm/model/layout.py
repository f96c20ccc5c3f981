"""Which files make a VisualGLM checkpoint folder, sat or HF format, and which format a folder is.

sat format (official ``visualglm-6b.zip``, RemoteGLM/XrayGLM fine-tunes)::

    DIR/latest                           text: the iteration, e.g. "300"
    DIR/model_config.json                model_class, arch args, eva_args, qformer_args, lora_rank, layer_range ...
    DIR/300/mp_rank_00_model_states.pt   {"module": state_dict, ...}

HF format (``THUDM/visualglm-6b``)::

    DIR/config.json, DIR/pytorch_model-0000k-of-0000n.bin + pytorch_model.bin.index.json
    (or model*.safetensors), DIR/ice_text.model

Every path a user gets wrong (the .pt file instead of the folder, a missing ``latest``, missing
shards, a Git LFS pointer) is one line saying what to pass. No weights are read here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json

SAT_CONFIG = "model_config.json"
SAT_LATEST = "latest"
SAT_WEIGHTS = "mp_rank_00_model_states.pt"
HF_CONFIG = "config.json"
HF_INDEX = ("pytorch_model.bin.index.json", "model.safetensors.index.json")
HF_SINGLE = ("pytorch_model.bin", "model.safetensors")
TOKENIZER_FILE = "ice_text.model"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def detect_format(path: str | os.PathLike) -> tuple[str, Path]:
    """("sat" | "hf", directory) for a checkpoint path, or a RemoteGLMError saying what to pass."""
    p = Path(path).expanduser()
    if not p.exists():
        raise RemoteGLMError(f"checkpoint not found: {p}: pass the directory of a sat (model_config.json + latest) or HF (config.json) checkpoint")
    if p.is_file():
        if p.suffix in WEIGHT_SUFFIXES or p.name == SAT_LATEST or p.name in (SAT_CONFIG, HF_CONFIG):
            d = p.parent
            if p.suffix == ".pt" and not (d / SAT_CONFIG).exists() and (d.parent / SAT_CONFIG).exists():
                d = d.parent  # DIR/300/mp_rank_00_model_states.pt -> DIR
            raise RemoteGLMError(f"{p} is a file inside a checkpoint; pass the checkpoint directory instead: {d}")
        raise RemoteGLMError(f"{p} is a file, not a checkpoint directory: pass the directory that holds model_config.json (sat) or config.json (HF)")
    if (p / SAT_CONFIG).is_file():
        return "sat", p
    if (p / HF_CONFIG).is_file():
        return "hf", p
    if (p / SAT_LATEST).is_file():
        raise RemoteGLMError(f"{p} looks like a sat checkpoint (it has '{SAT_LATEST}') but has no {SAT_CONFIG}: copy that file from the original download or training run")
    if (p / SAT_WEIGHTS).is_file() and (p.parent / SAT_CONFIG).is_file():
        raise RemoteGLMError(f"{p} is an iteration folder of a sat checkpoint; pass its parent directory: {p.parent}")
    inner = sorted(c for c in p.iterdir() if c.is_dir() and ((c / SAT_CONFIG).is_file() or (c / HF_CONFIG).is_file()))
    if len(inner) == 1:
        raise RemoteGLMError(f"{p} holds no checkpoint itself but {inner[0].name}/ does; pass {inner[0]}")
    raise RemoteGLMError(f"{p} is not a checkpoint directory: no {SAT_CONFIG} (sat format) and no {HF_CONFIG} (HF format)")


def check_not_lfs_pointer(f: Path) -> None:
    """One line for a Git LFS pointer file where weights were expected (a clone without `git lfs pull`)."""
    if f.stat().st_size < 1024:
        head = f.read_bytes()[:100]
        if head.startswith(b"version https://git-lfs"):
            raise RemoteGLMError(f"{f} is a Git LFS pointer, not the weights: run `git lfs pull` in {f.parent} (or download the file)")


def sat_weights_file(d: Path) -> Path:
    """DIR/{latest}/mp_rank_00_model_states.pt, with a precise error for each missing piece."""
    iters = sorted((c.name for c in d.iterdir() if c.is_dir() and (c / SAT_WEIGHTS).is_file()), key=_iter_key)
    latest = d / SAT_LATEST
    if not latest.is_file():
        if iters:
            fix = f"write the iteration to use into it, e.g. `echo {iters[-1]} > {latest}` (iteration folders found: {', '.join(iters)})"
        else:
            fix = f"and no iteration folder with {SAT_WEIGHTS} either: the download is incomplete"
        raise RemoteGLMError(f"{d} has {SAT_CONFIG} but no '{SAT_LATEST}' file: {fix}")
    it = latest.read_text(encoding="utf-8").strip()
    if not it:
        raise RemoteGLMError(f"{latest} is empty: write the iteration number into it (folders found: {', '.join(iters) or 'none'})")
    f = d / it / SAT_WEIGHTS
    if not f.is_file():
        found = f"iteration folders found: {', '.join(iters)}" if iters else f"no iteration folder holds {SAT_WEIGHTS}"
        raise RemoteGLMError(f"{latest} says iteration {it!r} but {f} does not exist ({found}); fix {SAT_LATEST} or restore the folder")
    return f


def _iter_key(name: str):
    return (0, int(name)) if name.isdigit() else (1, name)


def hf_weight_files(d: Path) -> list[Path]:
    """The weight files of an HF directory, checking that every shard in the index exists."""
    for index_name in HF_INDEX:
        index = d / index_name
        if index.is_file():
            wmap = read_json(index, require_object=True).get("weight_map")
            if not isinstance(wmap, dict) or not wmap:
                raise RemoteGLMError(f"{index} has no weight_map; restore it from the original download")
            shards = sorted(set(wmap.values()))
            missing = [s for s in shards if not (d / s).is_file()]
            if missing:
                raise RemoteGLMError(
                    f"{d} is incomplete: shard {missing[0]} listed in {index_name} is missing"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + "; download it again (e.g. `git lfs pull`) before loading"
                )
            return [d / s for s in shards]
    for name in HF_SINGLE:
        if (d / name).is_file():
            return [d / name]
    shards = sorted(d.glob("pytorch_model-*.bin")) + sorted(d.glob("model-*.safetensors"))
    if shards:
        raise RemoteGLMError(f"{d} has weight shards but no {HF_INDEX[0]} / {HF_INDEX[1]}; download the index file too")
    raise RemoteGLMError(f"{d} has {HF_CONFIG} but no weights (pytorch_model*.bin or model*.safetensors)")


_HF_WEIGHT_NAME = re.compile(r"^(pytorch_model(-\d+-of-\d+)?\.bin|model(-\d+-of-\d+)?\.safetensors)(\.index\.json)?$")


def hf_weight_files_on_disk(d: Path) -> list[Path]:
    """Every HF weight file and index in ``d``, in either layout (what a new save replaces)."""
    return sorted(f for f in d.iterdir() if f.is_file() and _HF_WEIGHT_NAME.match(f.name)) if d.is_dir() else []
