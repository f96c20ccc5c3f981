"""``remoteglm check_serving DIR``: can vLLM and SGLang serve this merged folder or LoRA adapter, and
do they build the prompt this toolkit trained with? Prints the commands that serve it.

    python -m remoteglm merge RUN checkpoints/qwen2.5-vl-rs && python -m remoteglm check_serving checkpoints/qwen2.5-vl-rs
    python -m remoteglm export_adapter RUN checkpoints/rs-lora && python -m remoteglm check_serving checkpoints/rs-lora

Each missing or unservable item is one line (exit status 1); remoteglm.train.serving says what the
servers need. Then a test conversation (system prompt, an image, an earlier turn, a question) is
rendered the way vLLM renders it - the chat template resolved as vllm/entrypoints/chat_utils.py's
``resolve_hf_chat_template`` does (AutoProcessor's template, else the tokenizer's) and applied with
the tokenizer's ``apply_chat_template`` - and must equal this toolkit's own rendering
(``remoteglm.model.hf_folder.Processor.render``) character for character and token for token. A
test image must get as many tokens from the folder's image processor (AutoImageProcessor, the
class the servers' processors hold) at the run's pixel settings as from this toolkit's.
transformers' AutoProcessor needs torchvision for these families' video processor: where it is
installed (it is wherever vLLM is) the processor's own ``apply_chat_template`` and image-token
expansion are compared too; where not, the template is read by the same transformers code
(``ProcessorMixin.get_processor_dict``) and the output says so.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.options import Parser

SYSTEM = "你是一名遥感图像分析助手。"
HISTORY = (("描述这张图片。", "图中有一片农田，农田旁边有一条道路。"),)
QUESTION = "图中道路是什么方向的？"
IMAGE_SIZE = (640, 480)


def probe_image():
    """A deterministic RGB test image (a gradient with a square): its size sets the token count."""
    from PIL import Image, ImageDraw

    w, h = IMAGE_SIZE
    im = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    ImageDraw.Draw(im).rectangle((w // 4, h // 4, w // 2, h // 2), fill=(200, 60, 40))
    return im


def _first_diff(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at character {i}: {a[max(0, i - 20):i + 20]!r} vs {b[max(0, i - 20):i + 20]!r}"


def server_processor(folder: Path):
    """(AutoProcessor or None, the chat template vLLM resolves for ``folder``, how it was read)."""
    from transformers import AutoProcessor, AutoTokenizer
    from transformers.processing_utils import ProcessorMixin

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    try:
        proc = AutoProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        template, how = proc.chat_template, "AutoProcessor"
    except ImportError as e:
        if "torchvision" not in str(e).lower():
            raise
        proc = None
        template = ProcessorMixin.get_processor_dict(str(folder), local_files_only=True)[0].get("chat_template")
        how = "the folder's template file as AutoProcessor reads it (AutoProcessor itself needs torchvision here)"
    return proc, tok, template or tok.chat_template, how  # vLLM: the processor's template, else the tokenizer's


def compare_render(served: Path, ours_dir: Path, fam, pixels: tuple[int, int]) -> tuple[list[str], list[str]]:
    """(problems, notes) of rendering the test conversation for ``served`` (what the server loads)
    against this toolkit's processor of ``ours_dir`` at ``pixels``."""
    from transformers import AutoImageProcessor

    from remoteglm.model.hf_folder import chat_messages, load_processor

    msgs = chat_messages(QUESTION, history=HISTORY, image=True, system=SYSTEM)
    ours = load_processor(ours_dir, fam, *pixels)
    text = ours.render(msgs, True)
    try:
        proc, tok, template, how = server_processor(served)
    except (OSError, ValueError) as e:
        return [f"{served}: transformers cannot load the tokenizer / processor ({str(e).splitlines()[0][:200]})"], []
    if not template:
        return [f"{served}: no chat template the servers can find (processor or tokenizer)"], []
    problems, notes = [], []
    ref = tok.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=True)
    if proc is not None:
        via = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if via != ref:
            problems.append(f"AutoProcessor.apply_chat_template differs from the tokenizer's {_first_diff(via, ref)}")
    if ref != text:
        problems.append(f"the servers' prompt differs from remoteglm's {_first_diff(ref, text)}")
    ids_ref = tok(ref, add_special_tokens=False)["input_ids"]
    ids = ours.tokenizer(text, add_special_tokens=False)["input_ids"]
    if ref == text and ids_ref != ids:  # the same text, another tokenizer
        k = next((i for i, (x, y) in enumerate(zip(ids_ref, ids)) if x != y), min(len(ids), len(ids_ref)))
        problems.append(f"the servers' tokenizer gives other token ids for the same prompt (from token {k}; "
                        f"{len(ids_ref)} vs remoteglm's {len(ids)})")
    im = probe_image()
    grid = ours.images([im])["image_grid_thw"]
    n_ours = int(grid.prod()) // ours.merge ** 2
    kw = fam.pixel_kwargs(*pixels)
    ip = AutoImageProcessor.from_pretrained(str(served), local_files_only=True, trust_remote_code=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 prefers size= over min/max_pixels
        counts = {k: int(ip(images=[im], return_tensors="pt", **a)["image_grid_thw"].prod()) // ours.merge ** 2
                  for k, a in (("folder", {}), ("kwargs", kw))}
        full = proc(text=[ref], images=[im], return_tensors="pt", **kw)["input_ids"][0].tolist() if proc else None
    if counts["kwargs"] != n_ours:
        problems.append(f"a {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} image gets {counts['kwargs']} tokens from the folder's "
                        f"image processor with {kw}, {n_ours} in remoteglm")
    if full is not None and full != ours.encode(text, grid):
        problems.append("the processor's expanded token ids (image tokens in place) differ from remoteglm's")
    if counts["folder"] != n_ours:
        notes.append(f"{served}/preprocessor_config.json alone resizes to other sizes than the run "
                     f"({counts['folder']} tokens for the test image, not {n_ours}): pass the pixel settings shown "
                     "(SGLang may not forward them to the image processor: serve a merged folder there)")
    if not problems:
        notes.insert(0, f"chat template: {len(ref)} characters, {len(ids)} tokens (+ {n_ours} image tokens for a "
                        f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} image) - the same as remoteglm's; read with {how}"
                        + ("; image tokens expanded by AutoProcessor: the same ids" if full is not None else ""))
    return problems, notes


def check_serving(path: str | Path) -> dict:
    """{"kind", "family", "problems", "notes", "commands"} for a merged folder or an adapter folder."""
    from remoteglm.families.hf import HFFamily
    from remoteglm.io import read_json
    from remoteglm.model.hf_folder import ADAPTER_CONFIG, adapter_base
    from remoteglm.registry import family_of
    from remoteglm.train.serving import adapter_problems, folder_problems, run_pixels, serve_commands

    d = Path(path).expanduser()
    adapter = (d / ADAPTER_CONFIG).is_file()
    if not d.is_dir() or not (adapter or (d / "config.json").is_file()):
        raise RemoteGLMError(f"{d} is neither a model folder (config.json) nor a LoRA adapter folder ({ADAPTER_CONFIG})")
    if adapter:
        problems = adapter_problems(d)
        try:
            base = adapter_base(d)
        except RemoteGLMError:
            return {"kind": "adapter", "family": None, "problems": problems, "notes": [], "commands": []}
    else:
        base = d
    fam = family_of(base)
    if not isinstance(fam, HFFamily):
        raise RemoteGLMError(f"{d} is a {fam.label} folder: vLLM and SGLang serve the transformers families "
                             "(Qwen2.5-VL, GLM-4.1V, Qwen3-VL), not it; use python -m remoteglm api")
    if not adapter:
        problems = folder_problems(d, fam)
    pixels = run_pixels(d, fam)
    notes: list[str] = []
    if not any(fam.template_file in p or "tokenizer" in p for p in problems):
        ours = d if (d / "tokenizer_config.json").is_file() else base  # as remoteglm loads it (load_hf)
        more, notes = compare_render(base, ours, fam, pixels)
        problems += more
    rank = read_json(d / ADAPTER_CONFIG, require_object=True).get("r") if adapter else None
    commands = [] if problems else serve_commands(base, fam, pixels, adapter=d if adapter else None, rank=rank,
                                                  name=d.name)
    return {"kind": "adapter" if adapter else "merged", "family": fam.label, "base": str(base), "pixels": pixels,
            "problems": problems, "notes": notes, "commands": commands}


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m remoteglm check_serving", description=__doc__.split("\n\n")[0],
                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="a merged folder (remoteglm merge) or an adapter folder (remoteglm export_adapter)")
    a = ap.parse_args(argv)
    from remoteglm.compat import quiet_warnings

    quiet_warnings()
    r = check_serving(a.dir)
    what = f"LoRA adapter of {r['base']}" if r["kind"] == "adapter" else "merged folder"
    print(f"{a.dir}: {r['family'] or 'unknown family'} {what}")
    for p in dict.fromkeys(r["problems"]):
        print(f"problem: {p}")
    for n in r["notes"]:
        print(n)
    if r["problems"]:
        print(f"{len(set(r['problems']))} problem(s): vLLM / SGLang would not serve this folder as trained")
        return 1
    lo, hi = r["pixels"]
    print(f"images at the run's resolution: {lo} to {hi} pixels (the image processor's own units)")
    print("serve with vLLM:\n  " + r["commands"][0])
    print("serve with SGLang:\n  " + r["commands"][1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
