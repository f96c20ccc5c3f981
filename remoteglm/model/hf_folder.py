"""Loading the transformers families' models (``remoteglm.families.hf``) from a local Hugging Face
folder, with no remote code and no hub.

    model, processor = load_hf(path, family, quant=4, device="cuda")   # a peft adapter folder works too

``family`` is the ``HFFamily`` the registry found (its tokens and patch geometry drive
``Processor``). An adapter folder (``adapter_config.json``, written by the fine-tune) is loaded
on top of the base it records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from remoteglm.device import parse_dtype
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json

ADAPTER_CONFIG = "adapter_config.json"
BASE_RECORD = "remoteglm_base.json"  # written beside an adapter: the base folder it was trained on
DEFAULT_PIXELS = (56 * 56, 28 * 28 * 1280)  # Qwen2-VL's image processor's (min, max) area, when a folder names none


def adapter_base(path: str | os.PathLike) -> Path | None:
    """The base model folder of a LoRA adapter folder (None when ``path`` is not one)."""
    d = Path(path).expanduser()
    if not (d / ADAPTER_CONFIG).is_file():
        return None
    rec = d / BASE_RECORD
    base = (read_json(rec, require_object=True).get("base") if rec.is_file()
            else read_json(d / ADAPTER_CONFIG, require_object=True).get("base_model_name_or_path"))
    if not base:
        raise RemoteGLMError(f"{d} is a LoRA adapter that does not say which base model it belongs to; merge it or "
                             f"add {BASE_RECORD} with {{\"base\": \"PATH\"}}")
    b = Path(base)
    if not b.is_absolute() and not b.exists():
        b = d / base
    if not (b / "config.json").is_file():
        raise RemoteGLMError(f"{d} is a LoRA adapter of {base}, which is not a model folder here: put the base model "
                             f"there or edit {rec.name}")
    return b


SAMPLING = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")


def sampling_defaults(path: str | os.PathLike) -> dict:
    """The decoding settings the model's authors ship (``generation_config.json`` of the folder,
    or of an adapter's base): they start every answer; a user's own settings override them."""
    d = Path(path).expanduser()
    for folder in (d, adapter_base(d)):
        if folder is not None and (folder / "generation_config.json").is_file():
            gc = read_json(folder / "generation_config.json", require_object=True)
            return {k: gc[k] for k in SAMPLING if gc.get(k) is not None}
    return {}


def bnb_config(bits: int | None, compute_dtype):
    """transformers' BitsAndBytesConfig for NF4 (QLoRA / int4 serving) or LLM.int8; the vision
    tower and the merger stay in float (they are small and sensitive to rounding)."""
    if not bits:
        return None
    if bits not in (4, 8):
        raise RemoteGLMError(f"--quant {bits}: use 4 (NF4) or 8 (LLM.int8)")
    from transformers import BitsAndBytesConfig

    from remoteglm.compat import pin_bnb_cpu_layout

    pin_bnb_cpu_layout()
    skip = ["model.visual", "lm_head"]  # matched from the start of the module name (transformers 5)
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


class Processor:
    """The folder's tokenizer, image processor and chat template, and the one step the models'
    processor classes add: each image placeholder becomes one token per merged patch. (Those
    classes also build a video processor, which needs torchvision; this engine takes images only.)"""

    def __init__(self, tokenizer, image_processor, chat_template: str, family):
        self.tokenizer, self.image_processor, self.family = tokenizer, image_processor, family
        self.chat_template = chat_template
        self.image_token_id = tokenizer.convert_tokens_to_ids(family.image_token)
        self.stop_ids = [i for i in (tokenizer.convert_tokens_to_ids(t) for t in family.stop_tokens)
                         if i is not None and i != tokenizer.unk_token_id]
        self.merge = int(getattr(image_processor, "merge_size", family.spatial_merge) or family.spatial_merge)

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def images(self, images: list) -> dict:
        """pixel_values / image_grid_thw tensors of PIL images (empty dict for none)."""
        if not images:
            return {}
        for im in images:
            check_aspect(*im.size)
        return dict(self.image_processor(images=images, return_tensors="pt"))

    def encode(self, text: str, grid_thw=None) -> list[int]:
        """Token ids of rendered ``text`` with each image placeholder expanded (``grid_thw``: one
        row per image, in order)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if grid_thw is None or len(grid_thw) == 0:
            if self.image_token_id in ids:
                raise RemoteGLMError("the prompt has an image placeholder but no image was given")
            return ids
        counts = [int(g.prod()) // self.merge ** 2 for g in grid_thw]
        out, k = [], 0
        for t in ids:
            if t == self.image_token_id:
                if k >= len(counts):
                    raise RemoteGLMError("the prompt has more image placeholders than images")
                out += [t] * counts[k]
                k += 1
            else:
                out.append(t)
        if k != len(counts):
            raise RemoteGLMError(f"{len(counts)} image(s) but {k} placeholder(s) in the prompt")
        return out

    def pixel_range(self) -> tuple[int, int]:
        """(min, max) image area the image processor resizes to."""
        size = self.image_processor.size
        return int(size.get("shortest_edge") or DEFAULT_PIXELS[0]), int(size.get("longest_edge") or DEFAULT_PIXELS[1])

    def tokens_for(self, width: int | None = None, height: int | None = None) -> int:
        """LLM tokens of a ``width`` x ``height`` image; without a size, of the largest square image
        the resolution setting allows."""
        lo, hi = self.pixel_range()
        if width is None or height is None:
            width = height = int((hi / self.family.frames_in_budget) ** 0.5)
        return image_tokens(width, height, lo, hi, self.family)

    def token_types(self, ids: list[int]) -> list[int]:
        """The models' ``mm_token_type_ids``: 1 on image tokens, 0 on text (their 3-D rotary
        positions are computed from it; without it they silently fall back to 1-D positions)."""
        return [1 if t == self.image_token_id else 0 for t in ids]


def chat_messages(query: str, history=(), image: bool = True, answer: str | None = None,
                  system: str | None = None) -> list[dict]:
    """The conversation in the chat-template message format: ``system`` (if any) in its own role,
    the image (if any) in the first user turn, earlier ``history`` turns, the question, and
    ``answer`` as the assistant turn if given. The one prompt layout of this engine (training and
    serving build it here).

    A turn is a plain string unless it carries the image (then a list of parts): that is the form
    every published template reads; GLM-4.1V's prints a list in a system or assistant turn as its
    Python repr."""
    turns = [*history, (query, answer)]
    msgs: list[dict] = [{"role": "system", "content": system}] if system else []
    for i, (q, a) in enumerate(turns):
        content = [{"type": "image"}, {"type": "text", "text": q}] if image and i == 0 else q
        msgs.append({"role": "user", "content": content})
        if a is not None:
            msgs.append({"role": "assistant", "content": a})
    return msgs


def load_processor(path: str | os.PathLike, family, min_pixels: int | None = None,
                   max_pixels: int | None = None) -> Processor:
    """The folder's own tokenizer, image processor and chat template, local files only;
    ``min_pixels``/``max_pixels`` override the image resolution it resizes to."""
    from transformers import AutoImageProcessor, AutoTokenizer

    d = Path(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
        ip = AutoImageProcessor.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise RemoteGLMError(f"{d}: cannot load the tokenizer/image processor ({str(e).splitlines()[0][:200]}); the folder "
                             "needs the tokenizer and preprocessor files of the original download") from None
    if min_pixels or max_pixels:
        lo = int(min_pixels or ip.size.get("shortest_edge", DEFAULT_PIXELS[0]))
        hi = int(max_pixels or ip.size.get("longest_edge", DEFAULT_PIXELS[1]))
        if lo > hi:
            raise RemoteGLMError(f"min_pixels {lo} is more than max_pixels {hi}")
        ip.size = {"shortest_edge": lo, "longest_edge": hi}
        for k, v in (("min_pixels", lo), ("max_pixels", hi)):
            if hasattr(ip, k):
                setattr(ip, k, v)
    template = None
    for name in ("chat_template.jinja",):
        if (d / name).is_file():
            template = (d / name).read_text(encoding="utf-8")
    if template is None and (d / "chat_template.json").is_file():
        template = read_json(d / "chat_template.json", require_object=True).get("chat_template")
    template = template or getattr(tok, "chat_template", None)
    if not template:
        raise RemoteGLMError(f"{d}: no chat template (chat_template.jinja / chat_template.json / tokenizer_config.json); "
                             "copy it from the original download")
    return Processor(tok, ip, template, family)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:240]


def check_weights(d: Path) -> list[Path]:
    """The folder's weight files: every shard its index names present, none a Git LFS pointer
    (a clone without ``git lfs pull``), each at least as long as its safetensors header says."""
    import struct

    from remoteglm.model.layout import check_not_lfs_pointer, hf_weight_files

    files = hf_weight_files(d)
    for f in files:
        check_not_lfs_pointer(f)
        if f.suffix == ".safetensors":
            with open(f, "rb") as fh:
                head = fh.read(8)
                n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
                if n <= 0 or n > 100 * 2**20:
                    raise RemoteGLMError(f"{f} is not a safetensors file (bad header); download it again")
                try:
                    meta = json.loads(fh.read(n))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise RemoteGLMError(f"{f} has a damaged header; download it again") from None
            end = max((v["data_offsets"][1] for k, v in meta.items() if k != "__metadata__"), default=0)
            if f.stat().st_size < 8 + n + end:
                raise RemoteGLMError(f"{f} is truncated ({f.stat().st_size:,} of {8 + n + end:,} bytes); download it again")
    return files


def check_folder(base: Path) -> None:
    """Everything about a base model folder that can be checked without loading it (weights
    complete, not pre-quantised): one line each. Serving and fine-tuning call it first."""
    check_weights(base)
    if read_json(base / "config.json", require_object=True).get("quantization_config"):
        raise RemoteGLMError(f"{base} holds pre-quantised weights, which this engine does not load; use the float "
                             "folder with --quant 4 or 8 (it quantises while loading)")


def from_pretrained(base: Path, dtype, quantization_config=None, device_map=None):
    """``AutoModelForImageTextToText.from_pretrained`` on a checked local folder, with loading
    errors (a damaged shard, a config this transformers cannot read) as one line. The caller
    runs ``check_folder`` first (fine-tuning does so before its data work)."""
    from transformers import AutoModelForImageTextToText

    if quantization_config is not None:
        from remoteglm.compat import quiet_warnings

        quiet_warnings()
    try:
        return AutoModelForImageTextToText.from_pretrained(
            str(base), local_files_only=True, trust_remote_code=False, dtype=dtype,
            quantization_config=quantization_config, device_map=device_map)
    except (OSError, ValueError, RuntimeError) as e:
        raise RemoteGLMError(f"{base}: cannot load the model ({_first_line(e)}); download the weights again") from None
    except Exception as e:  # noqa: BLE001 - safetensors' own errors (a truncated shard) are not OSErrors
        if type(e).__name__ != "SafetensorError":
            raise
        raise RemoteGLMError(f"{base}: a weight file is damaged ({_first_line(e)}); download it again") from None


def load_hf(path: str | os.PathLike, family, quant: int | None = None, device: str = "cpu", dtype=None, *,
             min_pixels: int | None = None, max_pixels: int | None = None, merge: bool = False):
    """(model, processor) of a local HF folder or of a LoRA adapter folder on its base. ``quant``:
    4 or 8 bits through bitsandbytes. ``merge``: fold an adapter into the weights (float only)."""
    import torch

    d = Path(path).expanduser()
    adapter = (d / ADAPTER_CONFIG).is_file()
    base = adapter_base(d) if adapter else d
    dt = parse_dtype(dtype, str(device))
    check_folder(base)
    qc = bnb_config(quant, dt)
    if qc is not None and merge:
        raise RemoteGLMError("cannot merge an adapter into a quantised model: merge in float, then quantise")
    # straight onto the device: no full copy in host RAM first
    model = from_pretrained(base, dt, qc, device_map={"": torch.device(device)})
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(d), is_trainable=False)
        if merge:
            model = model.merge_and_unload()
    model.eval()
    proc = load_processor(d if (d / "tokenizer_config.json").is_file() else base, family, min_pixels, max_pixels)
    return model, proc


MAX_ASPECT = 200  # the models' resize refuses longer strips


def check_aspect(width: int, height: int) -> None:
    """One line for an image these models cannot take (a strip over 200:1)."""
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise RemoteGLMError(f"image {width}x{height} is too long and thin for this model (over {MAX_ASPECT}:1); crop it")


def image_tokens(width: int, height: int, min_pixels: int, max_pixels: int, fam) -> int:
    """How many LLM tokens one ``width`` x ``height`` image becomes at this resolution setting."""
    f = fam.patch * fam.spatial_merge
    w, h = resized_size(width, height, min_pixels, max_pixels, fam)
    return (h // f) * (w // f)


def resized_size(width: int, height: int, min_pixels: int, max_pixels: int, fam) -> tuple[int, int]:
    """(width, height) the processors resize a ``width`` x ``height`` image to: sides rounded to
    patch*merge, area kept within [min, max] (GLM-4.1V counts the image twice, as two frames, and
    first scales tiny images up to one cell). Qwen2.5-VL's boxes are pixels of this image."""
    import math

    check_aspect(width, height)
    f, t = fam.patch * fam.spatial_merge, fam.frames_in_budget
    if t > 1 and (height < f or width < f):
        scale = max(f / height, f / width)
        height, width = int(height * scale), int(width * scale)
    h = round(height / f) * f
    w = round(width / f) * f
    if t * h * w > max_pixels:
        beta = math.sqrt(t * height * width / max_pixels)
        h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
    elif t * h * w < min_pixels:
        beta = math.sqrt(min_pixels / (t * height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return w, h


def folder_pixel_range(path: str | os.PathLike) -> tuple[int, int]:
    """(min, max) image area the folder's own image processor resizes to (preprocessor_config.json:
    ``size`` shortest/longest edge, else min/max_pixels, else the processors' defaults), read
    without loading it; a run folder answers for its base when it has no copy."""
    d = Path(path).expanduser()
    cfg = d / "preprocessor_config.json"
    if not cfg.is_file():
        base = adapter_base(d)
        cfg = (base or d) / "preprocessor_config.json"
    pc = read_json(cfg, require_object=True) if cfg.is_file() else {}
    size = pc.get("size") if isinstance(pc.get("size"), dict) else {}
    lo = size.get("shortest_edge") or pc.get("min_pixels") or DEFAULT_PIXELS[0]
    hi = size.get("longest_edge") or pc.get("max_pixels") or DEFAULT_PIXELS[1]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (lo, hi)) or lo > hi:
        raise RemoteGLMError(f"{cfg}: the image sizes (min {lo!r}, max {hi!r} pixels) are not a valid range")
    return lo, hi
