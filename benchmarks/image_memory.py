"""Memory of an image request just under the pixel cap: the API server's peak RSS growth.

    python benchmarks/image_memory.py               # tiny VisualGLM and a tiny random Qwen2.5-VL
    python benchmarks/image_memory.py --vlm DIR     # that model folder as the second model

Images: a 6000 x 6000 scene (36 MP; the default cap is 40 MP), smooth fields with fine texture,
saved as JPEG (quality 90) and PNG. For each model the server (``python -m remoteglm.serve.api``,
``--allow_path`` on the images' folder, 1 new token per answer) answers a small image first (lazy
imports, first passes); then its peak is reset (``/proc/PID/clear_refs``), one request names the
image file, and the growth of the peak (VmHWM) over the resident size before (VmRSS) is printed;
then the same for six requests at once (six copies: nothing comes from the cache). A fresh server
per model and image file: memory the allocator kept from one image would hide the next one's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from api_bench import memory_kib, start_server  # noqa: E402 - the benchmark helpers beside this file

SIDE = 6000
SMALL = HERE.parent / "tests" / "fixtures" / "images" / "s2_farmland.png"


def scene(path_stem: Path) -> list[Path]:
    """The 36 MP test image as JPEG and PNG."""
    from PIL import Image, ImageFilter

    base = Image.effect_noise((SIDE // 8, SIDE // 8), 60).filter(ImageFilter.GaussianBlur(6))
    fields = Image.merge("RGB", [base, base.transpose(Image.Transpose.ROTATE_90), base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    img = fields.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    texture = Image.effect_noise((SIDE, SIDE), 12).convert("RGB")
    img = Image.blend(img, texture, 0.15)
    out = [path_stem.with_suffix(".jpg"), path_stem.with_suffix(".png")]
    img.save(out[0], quality=90)
    img.save(out[1], compress_level=1)
    return out


def growth_mib(pid: int, send) -> float:
    """Peak RSS growth of process ``pid`` while ``send()`` runs, MiB."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = memory_kib(pid)["VmRSS"]
    send()
    return (memory_kib(pid)["VmHWM"] - before) / 1024


def measure(folder: Path, image: Path, tmp: Path) -> tuple[float, float]:
    import openai

    proc, url, lines = start_server(folder, ["--allow_path", str(tmp), "--max_request_mb", "500", "--max_new_tokens", "1"])
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
    model = folder.resolve().name

    def ask(path: Path) -> None:
        content = [{"type": "text", "text": "描述这张图片。"}, {"type": "image_url", "image_url": {"url": str(path)}}]
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], max_tokens=1)

    def six(path: Path) -> None:
        copies = []
        for i in range(6):
            c = tmp / f"{path.stem}-{i}{path.suffix}"
            shutil.copyfile(path, c)
            copies.append(c)
        threads = [threading.Thread(target=ask, args=(c,)) for c in copies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    try:
        small = tmp / SMALL.name
        shutil.copyfile(SMALL, small)
        ask(small)
        ask(small)
        return growth_mib(proc.pid, lambda: ask(image)), growth_mib(proc.pid, lambda: six(image))
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visualglm", type=Path, default=None, help="VisualGLM checkpoint (default: a fresh tiny one)")
    ap.add_argument("--vlm", type=Path, default=None, help="Qwen2.5-VL / GLM-4.1V folder (default: a fresh tiny random Qwen2.5-VL)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        visualglm, vlm = args.visualglm, args.vlm
        if visualglm is None:
            from remoteglm.model.tiny import create_tiny_checkpoint

            visualglm = create_tiny_checkpoint(tmp / "visualglm-tiny")
        if vlm is None:
            vlm = tmp / "qwen2.5-vl-tiny"
            subprocess.run([sys.executable, "-m", "remoteglm", "tiny", "qwen2_5_vl", str(vlm), "--pretrain_steps", "0"],
                           check=True, capture_output=True, cwd=HERE.parent,
                           env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        images = scene(tmp / "scene")
        sizes = ", ".join(f"{p.suffix[1:].upper()} {p.stat().st_size / 2**20:.1f} MB" for p in images)
        print(f"one {SIDE} x {SIDE} image ({SIDE * SIDE / 1e6:.0f} MP; {sizes}): the API server's peak RSS growth")
        for folder in (visualglm, vlm):
            for image in images:
                one, many = measure(Path(folder), image, tmp)
                print(f"  {Path(folder).name:<18} {image.suffix[1:].upper():<4} one request +{one:.0f} MiB, "
                      f"six at once +{many:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
