"""cli_demo.py as a real subprocess on the tiny checkpoint: piped stdin, one-shot, a pty, errors."""

import os
import pty
from concurrent.futures import ThreadPoolExecutor
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remoteglm.serve.engine import display_text
from remoteglm.serve.generation import chat

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "tests" / "fixtures" / "images" / "OSBS_029.tif"
# One thread each: the tiny model gains nothing from more, and two CLIs share 2 cores.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
GREEDY = ["--greedy", "--max_new_tokens", "24"]


def cli(*args, stdin=None, input=None, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "cli_demo.py"), *map(str, args)], input=input, stdin=stdin,
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


PIPED_LINES = [str(IMAGE), "有几条道路？", "clear", "new", "/no/such.png", "", "你好", "quit"]


@pytest.fixture(scope="module", autouse=True)
def background(tiny_checkpoint):
    """Start the piped run at once: it spends ~8 s importing sat, overlapping with the pty test
    instead of queueing behind it."""
    pool = ThreadPoolExecutor(1)
    runs = {"piped": pool.submit(cli, "--from_pretrained", tiny_checkpoint, *GREEDY, input="\n".join(PIPED_LINES) + "\n")}
    yield runs
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def expected(tiny):
    model, tok, _ = tiny
    first, history = chat(model, tok, IMAGE, "描述这张图片。", do_sample=False, max_new_tokens=24, repetition_penalty=1.2)
    second = chat(model, tok, IMAGE, "有几条道路？", history, do_sample=False, max_new_tokens=24, repetition_penalty=1.2)[0]
    text_only = chat(model, tok, None, "你好", do_sample=False, max_new_tokens=24, repetition_penalty=1.2)[0]
    return tuple(display_text(a) for a in (first, second, text_only))  # as the terminal shows them


def test_interactive_under_a_pty(tiny_checkpoint, background, expected):
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli_demo.py"), "--from_pretrained", str(tiny_checkpoint),
                             "--image", str(IMAGE), "--prompt", "描述这张图片。", *GREEDY],
                            stdin=slave, stdout=slave, stderr=slave, env=ENV, cwd=ROOT, close_fds=True)
    os.close(slave)
    buf = b""

    def read_until(marker: bytes, count: int = 1, timeout: float = 90) -> None:
        nonlocal buf
        end = time.time() + timeout
        while buf.count(marker) < count:
            assert time.time() < end, f"timed out waiting for {marker!r}; got {buf.decode(errors='replace')[-500:]}"
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    buf += os.read(master, 4096)
                except OSError:  # child closed the pty
                    break

    try:
        # a terminal means interactive even with --image and --prompt: answer, then wait for the user
        read_until("用户 / User: ".encode(), 2)
        assert b"VisualGLM: " in buf and "清空".encode() in buf
        os.write(master, "clear\n".encode())
        read_until("history cleared".encode())
        os.write(master, b"quit\n")
        read_until("再见 / bye".encode())
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = buf.decode(errors="replace").replace("\r\n", "\n")
    assert f"VisualGLM: {expected[0]}" in text


def test_piped_session_with_commands(background, expected):
    first, second, text_only = expected
    r = background["piped"].result(timeout=180)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "clear / 清空" in out and "quit / stop" in out  # the banner documents the commands
    assert out.count("VisualGLM: ") == 3
    assert f"用户 / User: 描述这张图片。\nVisualGLM: {first}" in out  # default prompt answered first
    assert f"VisualGLM: {second}" in out  # with history
    assert "已清空历史 / history cleared" in out
    assert f"VisualGLM: {text_only}" in out  # after `new` + Enter: text only
    assert "error: image file not found: /no/such.png" in r.stderr  # bad path: re-asked, not fatal
    assert out.rstrip().endswith("再见 / bye")
    assert "Traceback" not in r.stderr


def test_one_shot_without_terminal(tiny_checkpoint, expected, capsys, monkeypatch):
    """--image + --prompt + no terminal: print the answer alone and exit (in-process through
    cli_entry; the subprocess runs above cover the script itself)."""
    from remoteglm.serve.cli import main

    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--image", str(IMAGE), "--prompt", "描述这张图片。", *GREEDY])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.out == expected[0] + "\n"


def test_errors_are_one_line(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """Through cli_entry (in-process: the same code path, without 3 more interpreter starts)."""
    from remoteglm.serve.cli import main

    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    pt = tiny_checkpoint / "1" / "mp_rank_00_model_states.pt"
    assert main(["--from_pretrained", str(pt)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {pt} is a file inside a checkpoint; pass the checkpoint directory instead: {tiny_checkpoint}")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00 not really a tiff")
    assert main(["--from_pretrained", str(tiny_checkpoint), "--image", str(bad), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot read image {bad}")  # before loading the model
    from tests.imagetest import png_bomb

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(20000, 20000))
    assert main(["--from_pretrained", str(tiny_checkpoint), "--image", str(bomb), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 图片太大 / image too large:") and "Traceback" not in err[0]
    assert main(["--from_pretrained", str(tmp_path / "nowhere"), "--image", str(IMAGE), "--prompt", "hi"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: checkpoint not found: {tmp_path / 'nowhere'}")


# cli_demo.py run as a script, reporting at exit whether anything imported bitsandbytes.
MODULES_PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("bitsandbytes imported:", "bitsandbytes" in sys.modules, file=sys.stderr))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_quiet_start_without_quant(tiny_checkpoint):
    """No --quant: bitsandbytes is not imported, so its kernel warning cannot appear."""
    r = subprocess.run([sys.executable, "-c", MODULES_PROBE, str(ROOT / "cli_demo.py"), "--from_pretrained", str(tiny_checkpoint),
                        "--image", str(IMAGE), "--prompt", "描述这张图片。", *GREEDY],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "bitsandbytes imported: False" in r.stderr
    assert "kernels-community" not in r.stderr and "gemm_4bit" not in r.stderr
    assert r.stdout.strip()  # it did answer


def test_the_cli_and_the_web_demo_start_from_one_sampling_table():
    """VisualGLM's official cli_demo and web_demo values are one table (sampling.DEMO_DEFAULTS),
    beside the chat() values the API starts from: the CLI's help and both --max_new_tokens read it."""
    from remoteglm.serve import sampling
    from remoteglm.serve.cli import build_parser as cli_parser
    from remoteglm.serve.web import build_parser as web_parser

    d = sampling.DEMO_DEFAULTS
    assert sorted(n for n, v in vars(sampling).items() if n.endswith("_DEFAULTS") and isinstance(v, dict)) == [
        "CHAT_DEFAULTS", "DEMO_DEFAULTS"]
    shown = " ".join(cli_parser().format_help().split())
    for key in ("temperature", "top_p", "top_k", "repetition_penalty", "max_length"):
        assert f"VisualGLM {d[key]}]" in shown, key
    cli, web = (p.parse_args(["--from_pretrained", "x"]) for p in (cli_parser(), web_parser()))
    assert cli.max_new_tokens == web.max_new_tokens == d["max_new_tokens"]
