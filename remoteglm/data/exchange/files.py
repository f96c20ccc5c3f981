"""One file each way: ``export_file`` (a fine-tune record file -> a tool's file) and ``import_file``
(a tool's file -> a fine-tune record file). Every sample is read and checked first (one line
naming the file and item for the first problem); only then is anything written, each file
atomically.

``codec``: the family's box codec in the frame the tool shows the model (the caller builds it:
``remoteglm.commands.exchange_args``), None when the data has no boxes; ``size_of``: the upright
size of an image file or bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remoteglm.data.exchange import llamafactory, openai, qwen, swift
from remoteglm.data.exchange.common import (
    Exporter, ImagePaths, Importer, SizeOf, export_items, read_rows, write_rows,
)
from remoteglm.errors import RemoteGLMError
from remoteglm.io import check_writable, write_bytes_atomic

EXPORTS = {"llamafactory": llamafactory, "swift": swift, "qwen": qwen}
IMPORTS = {"llamafactory": llamafactory, "swift": swift, "qwen": qwen, "openai": openai}
WHAT = {"llamafactory": "LLaMA-Factory file", "swift": "ms-swift file", "qwen": "qwen-vl-finetune file",
        "openai": "OpenAI-style messages file"}


@dataclass
class Summary:
    samples: int
    with_boxes: int
    conversations: int
    images_stored: int = 0
    objects: int = 0  # ms-swift samples whose boxes are objects (placeholders)
    info: Path | None = None  # LLaMA-Factory's dataset_info.json, when written


def _check_paths(src: Path, out: Path) -> None:
    if out.suffix not in (".json", ".jsonl"):
        raise RemoteGLMError(f"{out}: name the output .json (a JSON list) or .jsonl (JSON Lines)")
    if out.absolute() == src.absolute():
        raise RemoteGLMError(f"{out} is the input file; write to another file")
    check_writable(out, "output", folder=False)


def export_file(fmt: str, src: str | Path, out: str | Path, codec: Any, size_of: SizeOf, *,
                split: str = "train", seed: int = 42, image_root: str | Path | None = None,
                relative_to: str | Path | None = None, dataset_name: str | None = None,
                swift_objects: bool = True, pixels: dict | None = None) -> Summary:
    """Write the records of ``src`` (a fine-tune JSON list or a Chinese Karpathy dataset's
    ``split``) to ``out`` in ``fmt``; LLaMA-Factory also gets its entry in the dataset_info.json
    beside ``out`` (``dataset_name``, default the file's stem; other entries kept)."""
    src, out = Path(src), Path(out)
    if fmt not in EXPORTS:
        raise RemoteGLMError(f"unknown format {fmt!r}: export writes {', '.join(EXPORTS)}")
    _check_paths(src, out)
    mod = EXPORTS[fmt]
    exporter = Exporter(codec, size_of, tags=mod.PLACEHOLDERS)
    paths = ImagePaths(Path(relative_to) if relative_to is not None else None)
    items = export_items(src, split, seed, image_root)
    rows = []
    for i, (rec, meta) in enumerate(items):
        where = f"{src}: item {i}"
        if fmt == "swift":
            rows.append(swift.row(rec, meta, exporter, paths, where, swift_objects, pixels))
        else:
            rows.append(mod.row(rec, meta, exporter, paths, where))
    info = None
    if fmt == "llamafactory":
        info = llamafactory.info_with(out.parent, dataset_name or out.stem, out.name)
    write_rows(out, rows)
    if info is not None:
        llamafactory.write_info(out.parent, info)
    return Summary(len(rows), sum(1 for r, _ in items if r.prompt_boxes or r.label_boxes),
                   sum(1 for r, _ in items if r.history),
                   info=out.parent / llamafactory.INFO if info is not None else None,
                   objects=sum(1 for r in rows if "objects" in r))


def import_file(fmt: str, src: str | Path, out: str | Path, codec: Any, size_of: SizeOf, *,
                image_root: str | Path | None = None, drop_system: bool = False,
                pixels: dict | None = None) -> Summary:
    """Write the conversations of ``src`` (a ``fmt`` file) to ``out`` as fine-tune records (image
    paths relative to ``out``'s folder; images that came as data URLs stored in ``OUT_images/``)."""
    src, out = Path(src), Path(out)
    if fmt not in IMPORTS:
        raise RemoteGLMError(f"unknown format {fmt!r}: import reads {', '.join(IMPORTS)}")
    if out.suffix != ".json":
        raise RemoteGLMError(f"{out}: records are a JSON list; name the output .json")
    _check_paths(src, out)
    rows = read_rows(src, WHAT[fmt])
    if fmt == "qwen":
        samples = qwen.samples(src, rows)
    elif fmt == "swift":
        samples = swift.samples(src, rows, drop_system, pixels)
    else:
        samples = IMPORTS[fmt].samples(src, rows, drop_system)
    importer = Importer(codec, size_of, Path(image_root) if image_root else src.parent, out.parent,
                        out.parent / f"{out.stem}_images")
    records = [importer.record(s) for s in samples]
    for path, data in importer.images.items():
        if not path.is_file():
            write_bytes_atomic(path, data)
    write_rows(out, records)
    return Summary(len(records), sum(1 for r in records if r.get("prompt_boxes") or r.get("label_boxes")),
                   sum(1 for r in records if r.get("history")), images_stored=len(importer.images))

