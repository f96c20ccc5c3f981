"""Command-line option groups shared by the entry points (cli_demo, web_demo, the API, fine-tune,
merge, evaluation, convert, quantise): a floor, so model/ and train/ need not import serve/."""

from __future__ import annotations

import argparse
import sys


class Parser(argparse.ArgumentParser):
    """argparse with one flag style: options are declared ``--with_underscores`` (VisualGLM's own
    style, kept by the design card's scripts) and each is also accepted as ``--with-dashes``."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        for k, a in enumerate(args):
            if a == "--":
                break
            if a.startswith("--") and "-" in a[2:].partition("=")[0]:
                name, eq, value = a.partition("=")
                alt = "--" + name[2:].replace("-", "_")
                if name not in self._option_string_actions and alt in self._option_string_actions:
                    args[k] = alt + eq + value
        return super().parse_known_args(args, namespace)


def add_model_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--from_pretrained, --tokenizer, --quant, --device, --dtype, --trust_checkpoint: which model, how it is loaded."""
    ap.add_argument("--from_pretrained", required=True, metavar="DIR",
                    help="model folder of any family (remoteglm/families: VisualGLM in sat or HF layout, "
                         "Qwen2.5-VL, GLM-4.1V, Qwen3-VL), a fine-tune run, merged or quantised folder")
    ap.add_argument("--tokenizer", metavar="PATH", help="VisualGLM: ice_text.model (default: the one in the checkpoint directory)")
    ap.add_argument("--quant", type=int, choices=[4, 8],
                    help="quantise the language model's linear layers to 4 (NF4) or 8 (int8) bits with bitsandbytes")
    ap.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    ap.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on CUDA, fp32 on CPU)")
    ap.add_argument("--min_pixels", type=int, default=None, help="transformers families: smallest image area after resizing")
    ap.add_argument("--max_pixels", type=int, default=None,
                    help="transformers families: largest image area after resizing (one token per 28 x 28 pixels; "
                         "Qwen3-VL: 32 x 32)")
    add_trust_arg(ap)
    return ap


def add_trust_arg(ap) -> None:
    """--trust_checkpoint, for every command that reads checkpoint files (``ap``: a parser or group).
    The command passes the value to ``remoteglm.model.unpickle.trust_checkpoints``."""
    ap.add_argument("--trust_checkpoint", "--trust_checkpoint", dest="trust_checkpoint", action="store_true",
                    help="unpickle checkpoint files without the safe-type check (they can run code while loading): "
                         "only for files you trust that are refused otherwise")


def add_host_arg(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    return ap
