"""Image loading and VisualGLM preprocessing on real aerial tiles and generated variants."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from remoteglm.errors import RemoteGLMError
from remoteglm.model.image import CLIP_MEAN, CLIP_STD, load_image, preprocess_image, preprocess_images
from tests.imagetest import png_bomb

MEAN = np.array(CLIP_MEAN, dtype=np.float32)
STD = np.array(CLIP_STD, dtype=np.float32)


def normalised(rgb) -> np.ndarray:
    """CLIP normalisation of 8-bit RGB values, computed independently of the module."""
    return (np.asarray(rgb, dtype=np.float32) / 255.0 - MEAN) / STD


def test_real_tiff_matches_reference_math(fixture_images):
    src = fixture_images / "OSBS_029.tif"  # 400x400 TIFF, like UCM's .tif files
    x = preprocess_image(src)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    with Image.open(src) as im:
        ref = np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC))
    expected = normalised(ref).transpose(2, 0, 1)
    assert np.allclose(x.numpy(), expected, atol=1e-6)
    # ranges of CLIP normalisation of [0, 1] data
    assert x.min() >= (0 - MEAN.max()) / STD.min() - 1e-4 and x.max() <= (1 - MEAN.min()) / STD.min() + 1e-4


def test_same_pixels_in_tiff_png_bytes_and_pil_give_same_tensor(fixture_images, tmp_path):
    tif = fixture_images / "OSBS_029.tif"
    png = tmp_path / "same.png"
    with Image.open(tif) as im:
        im.save(png)
        pil = im.copy()
    a = preprocess_image(tif)
    assert torch.equal(a, preprocess_image(png))
    assert torch.equal(a, preprocess_image(str(png)))
    assert torch.equal(a, preprocess_image(png.read_bytes()))
    assert torch.equal(a, preprocess_image(pil))
    jpg = tmp_path / "lossy.jpg"
    pil.save(jpg, quality=95)
    b = preprocess_image(jpg)
    assert b.shape == a.shape and (b - a).abs().mean() < 0.05  # JPEG is lossy but close


def test_already_224_is_not_resampled():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    x = preprocess_image(Image.fromarray(arr))
    assert np.allclose(x.numpy(), normalised(arr).transpose(2, 0, 1), atol=1e-6)


def test_resize_is_a_squash_not_a_crop():
    arr = np.zeros((100, 400, 3), dtype=np.uint8)  # wide image: left half black, right half white
    arr[:, 200:] = 255
    x = preprocess_image(Image.fromarray(arr))
    assert x.shape == (3, 224, 224)
    black, white = torch.tensor(normalised([0, 0, 0])), torch.tensor(normalised([255, 255, 255]))
    # both halves survive (a centre crop would lose the outer columns)
    assert torch.allclose(x[:, :, 0], black.view(3, 1).expand(3, 224), atol=1e-5)
    assert torch.allclose(x[:, :, 223], white.view(3, 1).expand(3, 224), atol=1e-5)


def test_uniform_colour_of_odd_size_stays_exact():
    x = preprocess_image(Image.new("RGB", (300, 170), (255, 0, 128)))
    assert torch.allclose(x, torch.tensor(normalised([255, 0, 128])).view(3, 1, 1).expand(3, 224, 224), atol=1e-5)


def test_grayscale_bilevel_and_palette(tmp_path):
    gray = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 256
    path = tmp_path / "gray.png"
    Image.fromarray(gray.astype(np.uint8), mode="L").save(path)
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (64, 64, 3)
    assert (rgb[..., 0] == gray).all() and (rgb[..., 1] == gray).all() and (rgb[..., 2] == gray).all()
    bilevel = tmp_path / "bw.tif"
    Image.new("1", (10, 10), 1).save(bilevel)
    assert np.asarray(load_image(bilevel)).min() == 255
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (np.asarray(load_image(pal)) == [10, 200, 30]).all()


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = [200, 10, 10]
    rgba[:2, :, 3] = 255  # top rows opaque red
    rgba[2:, :, 3] = 0  # bottom rows fully transparent (hidden colour is red too)
    rgba[3, 0, 3] = 128  # half transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = np.asarray(load_image(path)).astype(int)
    assert (out[:2] == [200, 10, 10]).all()
    assert (out[2, :] == [255, 255, 255]).all()
    assert np.allclose(out[3, 0], [228, 132, 132], atol=2)  # 50% red over white
    la = Image.fromarray(np.stack([np.full((2, 2), 50, np.uint8), np.array([[255, 0], [255, 0]], np.uint8)], -1), mode="LA")
    assert np.asarray(load_image(la))[:, 1].min() == 255 and (np.asarray(load_image(la))[:, 0] == 50).all()
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 0
    out = np.asarray(load_image(pal))
    assert (out[1, 1] == [0, 0, 255]).all() and (out[0, 0] == [255, 255, 255]).all()
    pal.save(tmp_path / "pal.png", transparency=0)  # the same through a file
    assert np.array_equal(np.asarray(load_image(tmp_path / "pal.png")), out)


def test_multi_frame_tiff_uses_first_frame(tmp_path):
    path = tmp_path / "frames.tif"
    first, second = Image.new("RGB", (5, 5), (1, 2, 3)), Image.new("RGB", (5, 5), (9, 9, 9))
    first.save(path, save_all=True, append_images=[second])
    assert (np.asarray(load_image(path)) == [1, 2, 3]).all()


def test_16_bit_is_stretched_like_scenes_not_black(tmp_path):
    # a 16-bit satellite export: reflectance 300..1500 of 65535; by range (255/65535) it was
    # all 0..6, i.e. black. Now the scene stretch: 2nd..98th percentile (324..1476) -> 0..255.
    values = np.linspace(300, 1500, 101).round().astype(np.uint16)[None]
    for name in ("g16.png", "g16.tif"):
        path = tmp_path / name
        Image.fromarray(values).save(path)
        with Image.open(path) as im:
            assert im.mode.startswith("I")  # really a 16-bit file
        out = np.asarray(load_image(path))[0, :, 0]
        assert out[[0, 1, 50, 99, 100]].tolist() == [0, 0, 128, 255, 255]  # 900 -> (900-324)/1152*255 = 127.5
        assert (np.diff(out.astype(int)) >= 0).all() and len(set(out.tolist())) > 90
    # 32-bit values beyond 16 bits: the same stretch (percentiles 3995.2 .. 196000)
    wide = Image.fromarray(np.array([[-5, 100000, 200000]], dtype=np.int32), mode="I")
    assert np.asarray(load_image(wide))[0, :, 0].tolist() == [0, 128, 255]
    # float: non-finite pixels are black and left out of the limits (2nd..98th percentile of the finite ones)
    f = Image.fromarray(np.array([[0.0, np.nan, 0.25, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(load_image(f))[0, :, 0].tolist() == [0, 0, 63, 130, 255]
    assert preprocess_image(tmp_path / "g16.png").shape == (3, 224, 224)


def test_batch_and_image_size(fixture_images):
    srcs = [fixture_images / "OSBS_029.tif", fixture_images / "s2_farmland.png"]
    batch = preprocess_images(srcs)
    assert batch.shape == (2, 3, 224, 224)
    assert torch.equal(batch[1], preprocess_image(srcs[1]))
    assert preprocess_images(srcs, image_size=32).shape == (2, 3, 32, 32)
    assert preprocess_images([]).shape == (0, 3, 224, 224)


def test_bad_inputs_are_one_line_errors(tmp_path, fixture_images):
    def error(src) -> str:
        with pytest.raises(RemoteGLMError) as e:
            preprocess_image(src)
        msg = str(e.value)
        assert "\n" not in msg
        return msg

    missing = tmp_path / "no_such.tif"
    msg = error(missing)
    assert str(missing) in msg and "not found" in msg
    assert "directory" in error(tmp_path)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG but not really an image" * 10)
    msg = error(junk)
    assert str(junk) in msg and "PNG or JPEG" in msg
    text = tmp_path / "notes.tif"
    text.write_text("just text")
    assert str(text) in error(text)
    # a real JPEG cut in half: the header parses, the pixels do not
    buf = io.BytesIO()
    with Image.open(fixture_images / "s2_farmland.png") as im:
        im.save(buf, format="JPEG")
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    msg = error(cut)
    assert str(cut) in msg and "truncated" in msg
    assert "bytes of image data" in error(b"not an image")
    assert "file path, bytes or a PIL image" in error(12345)


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    import resource
    import time

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(20000, 20000))
    assert bomb.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    for src in (bomb, bomb.read_bytes()):
        with pytest.raises(RemoteGLMError, match=r"image too large: .*400,000,000 pixels.*REMOTEGLM_MAX_PIXELS"):
            preprocess_image(src)
    assert time.perf_counter() - t < 2  # nothing was decoded
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: no 400 MB decode


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(png_bomb(3000, 3000))  # 9 MP: under the default limit
    assert preprocess_image(big).shape == (3, 224, 224)
    monkeypatch.setenv("REMOTEGLM_MAX_PIXELS", "1000000")
    with pytest.raises(RemoteGLMError, match="over the limit of 1,000,000"):
        preprocess_image(big)


def test_exif_orientation_is_applied(tmp_path):
    """A phone or drone JPEG stored sideways with an EXIF Orientation tag (written here by PIL)
    reaches the model upright, as image viewers show it."""
    stored = Image.new("RGB", (60, 40), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 30, 40))  # the stored left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    sideways = tmp_path / "drone.jpg"
    stored.save(sideways, exif=exif, quality=95)
    img = np.asarray(load_image(sideways), dtype=np.float32)
    assert img.shape == (60, 40, 3)
    top, bottom = img[:25].mean((0, 1)), img[35:].mean((0, 1))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # turned clockwise: the left half is on top
    upright = tmp_path / "upright.png"
    stored.rotate(-90, expand=True).save(upright)
    assert (preprocess_image(sideways) - preprocess_image(upright)).abs().mean() < 0.05


def _scene(side: int) -> Image.Image:
    """A smooth synthetic scene (gradients in three directions)."""
    g = Image.linear_gradient("L").resize((side, side), Image.BILINEAR)
    return Image.merge("RGB", [g, g.rotate(90), g.transpose(Image.FLIP_LEFT_RIGHT)])


def test_a_large_jpeg_is_decoded_at_the_size_the_model_uses(tmp_path):
    """A 36 MP photo just under the pixel cap: VisualGLM's 224 x 224 input comes from a reduced
    decode - a few MB at the peak, not the full image's 108 MB as RGB - and matches the resize of
    the full-size image."""
    import subprocess
    import sys

    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    _scene(6000).save(big, quality=90)
    _scene(300).save(small, quality=90)
    code = ("import sys\n"
            "from remoteglm.model.image import preprocess_image\n"
            "def peak():  # this process's own (ru_maxrss would start from the parent's at the fork)\n"
            "    return int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
            "preprocess_image(sys.argv[2])\n"
            "before = peak()\n"
            "preprocess_image(sys.argv[1])\n"
            "print(peak() - before)\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code, str(big), str(small)], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) < 40_000  # KiB
    with Image.open(big) as im:
        ref = np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC), dtype=np.float32)
    got = preprocess_image(big).numpy().transpose(1, 2, 0) * STD + MEAN
    assert np.abs(got * 255 - ref).mean() < 2.0


def test_pils_bomb_warning_never_prints_before_the_one_line_refusal(tmp_path):
    """A header over PIL's own warning size (89 MP) but under its hard stop: training's image
    check and the loader refuse it in one line each, without PIL's two-line warning first."""
    import subprocess
    import sys

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(10000, 10000))  # 100 MP
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from remoteglm.errors import RemoteGLMError\n"
            "from remoteglm.data.records import Record\nfrom remoteglm.train.data import check_images\n"
            "kept, problems = check_images([Record(Path(sys.argv[1]), 'q', 'a')])\n"
            "print(len(kept), problems)\n"
            "from remoteglm.model.image import preprocess_image\n"
            "try:\n"
            "    preprocess_image(sys.argv[1])\n"
            "except RemoteGLMError as e:\n"
            "    print(e)\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-W", "always", "-c", code, str(bomb)], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "DecompressionBomb" not in out.stderr, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first.startswith("0 [") and "image too large" in first and "100,000,000 pixels" in first
    assert "image too large" in second and "REMOTEGLM_MAX_PIXELS" in second
