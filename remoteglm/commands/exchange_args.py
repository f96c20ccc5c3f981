"""Options ``remoteglm export`` and ``remoteglm import_chat`` share: which family's box text
(``--family`` or ``--model``), the pixel settings the boxes are written for, LLaMA-Factory's own
resize settings, and where images are found; and the codec they make, in the frame of the image
each tool shows the model (``codec_for``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from remoteglm.errors import RemoteGLMError

PIXELS_HELP = (
    "the pixel settings the boxes are written for, where a family's boxes depend on them (Qwen2.5-VL: "
    "pixels of the image after its resize into [min, max] pixels). qwen: the script's --min_pixels/--max_pixels; "
    "swift: MIN_PIXELS/MAX_PIXELS (also written per sample as chat_template_kwargs); llamafactory: the model "
    "folder's own image processor range (preprocessor_config.json; Qwen/Qwen2.5-VL-7B-Instruct: 3136 and "
    "12845056), LLaMA-Factory's resize before it is --image_max_pixels/--image_min_pixels. "
    "Default: the --model folder's")


def add_target_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("box text (only for records with boxes)")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--family", metavar="NAME",
                       help="the model family whose box text to use: qwen2_5_vl (pixels of the resized image), "
                            "qwen3_vl and glm4v (0..1000), visualglm (000..999)")
    which.add_argument("--model", metavar="DIR", help="a model folder: its family, and its pixel range as the default")
    g.add_argument("--min_pixels", type=int, metavar="N", help=PIXELS_HELP)
    g.add_argument("--max_pixels", type=int, metavar="N", help="see --min_pixels")
    g.add_argument("--image_max_pixels", type=int, metavar="N",
                   help="llamafactory only: LLaMA-Factory's image_max_pixels, as given to it [768*768 = 589824]")
    g.add_argument("--image_min_pixels", type=int, metavar="N",
                   help="llamafactory only: LLaMA-Factory's image_min_pixels [32*32 = 1024]")
    ap.add_argument("--image_root", metavar="DIR",
                    help="where the input's relative image paths are looked up [the input file's folder]")


def codec_for(fmt: str, a: argparse.Namespace):
    """(the family or None, the box codec in the frame ``fmt``'s tool shows the model or None, the
    pixel settings the boxes depend on or None)."""
    from remoteglm.data.exchange import llamafactory, qwen

    for v, name in ((a.min_pixels, "--min_pixels"), (a.max_pixels, "--max_pixels"),
                    (a.image_max_pixels, "--image_max_pixels"), (a.image_min_pixels, "--image_min_pixels")):
        if v is not None and v <= 0:
            raise RemoteGLMError(f"{name} must be a positive pixel count, got {v}")
    if fmt != "llamafactory" and (a.image_max_pixels or a.image_min_pixels):
        raise RemoteGLMError(f"--image_max_pixels / --image_min_pixels are LLaMA-Factory's settings; {fmt} has none "
                             "(use --min_pixels / --max_pixels)")
    if not (a.family or a.model):
        if a.min_pixels or a.max_pixels:
            raise RemoteGLMError("--min_pixels / --max_pixels set the frame of a family's boxes: name the family "
                                 "(--family or --model)")
        return None, None, None
    from remoteglm.registry import family_named, family_of

    fam = family_of(a.model) if a.model else family_named(a.family)
    if fmt == "qwen" and fam.name not in qwen.FAMILIES:
        raise RemoteGLMError(f"Qwen's qwen-vl-finetune scripts train Qwen models; {fam.label} data goes to "
                             "llamafactory or swift")
    codec = fam.box_codec(Path(a.model) if a.model else None, min_pixels=a.min_pixels, max_pixels=a.max_pixels)
    pixels = {k: codec.settings[k] for k in ("min_pixels", "max_pixels") if k in codec.settings} or None
    if fmt == "llamafactory":
        codec = llamafactory.tool_frame(codec, a.image_max_pixels or llamafactory.IMAGE_MAX_PIXELS,
                                        a.image_min_pixels or llamafactory.IMAGE_MIN_PIXELS)
    return fam, codec, pixels


def size_of(src):
    """The upright size of an image file or bytes, as training reads it."""
    from remoteglm.model.image import image_size

    return image_size(src)
