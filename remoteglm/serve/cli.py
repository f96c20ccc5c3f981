"""Command-line chat with any model family (``python cli_demo.py``).

Interactive: asks for an image path, answers the default prompt about it, then chats with
streaming output and history. Commands: ``clear`` / ``清空`` (clear history), ``new`` / ``换图``
(another image), ``quit`` / ``stop`` / ``退出`` (exit). Piped stdin works the same, line by line.
With ``--image`` and ``--prompt`` and no terminal on stdin it answers once and exits (scripting).

Answers stop after ``--max_new_tokens`` (512 unless set; 0: only ``--max_length``), are
post-processed like the official chat's (full-width punctuation next to Chinese) and shown without
control characters; an empty answer shows as "（空回答） (empty answer)" (in one-shot mode stdout
gets an empty line and stderr the note, so a script reads the real, empty answer). The boxes of an
answer about an image follow it, one line each, in the original image's pixels:
``框 / box 1: 储油罐 12,30,200,310`` (label, then x1,y1,x2,y2).
"""

from __future__ import annotations

import argparse
import sys

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.model.prompt import DEFAULT_PROMPT, DEFAULT_PROMPT_EN
from remoteglm.serve.sampling import DEMO_DEFAULTS
from remoteglm.options import Parser, add_model_args

QUIT = {"quit", "exit", "stop", "q", "退出"}
CLEAR = {"clear", "清空"}
NEW_IMAGE = {"new", "换图"}

BANNER = """\
欢迎使用 {speaker} 命令行对话。先输入图像路径（直接回车为纯文本对话），然后提问；回答逐字输出。
  clear / 清空  清空对话历史    new / 换图  换一张图像    quit / stop / 退出  退出
Welcome to the {speaker} command-line chat. Enter an image path (Enter alone: text only), then ask.
  clear: clear the history    new: load another image    quit / stop: exit"""

IMAGE_PROMPT = "图像路径 / image path: "
USER_PROMPT = "用户 / User: "


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(description="Chat with a model (VisualGLM-6B, Qwen2.5-VL, GLM-4.1V, Qwen3-VL) about an image in the terminal.")
    add_model_args(ap)
    ap.add_argument("--image", metavar="PATH", help="image to talk about first")
    ap.add_argument("--prompt", help=f"first question about the image (default {DEFAULT_PROMPT!r}, English {DEFAULT_PROMPT_EN!r})")
    ap.add_argument("--english", action="store_true", help="English prompt format (Q:/A:), Chinese tokens suppressed")
    # Unset options take the model's own values: a transformers family folder's generation_config.json,
    # else VisualGLM's official cli_demo values (shown in brackets).
    d = DEMO_DEFAULTS
    ap.add_argument("--temperature", type=float, help=f"sampling temperature [the model's; VisualGLM {d['temperature']}]")
    ap.add_argument("--top_p", type=float, help=f"nucleus sampling [the model's; VisualGLM {d['top_p']}]")
    ap.add_argument("--top_k", type=int, help=f"top-k sampling [the model's; VisualGLM {d['top_k']}]")
    ap.add_argument("--repetition_penalty", type=float,
                    help=f"[the model's; VisualGLM {d['repetition_penalty']}]")
    ap.add_argument("--max_length", type=int, help=f"prompt + answer tokens [the model's context; VisualGLM {d['max_length']}]")
    ap.add_argument("--max_new_tokens", type=int, default=d["max_new_tokens"],
                    help=f"cap on answer tokens (default {d['max_new_tokens']}; 0: only --max_length)")
    ap.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling (deterministic)")
    ap.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    return ap


def _read(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None


def print_answer(partials, out=None, empty_note=None) -> str:
    """Print a streamed answer as it grows (control characters removed); returns what was shown.
    An empty final answer prints ``EMPTY_ANSWER``, or, with ``empty_note`` (a stream such as
    stderr), nothing, and the note goes there."""
    from remoteglm.serve.engine import EMPTY_ANSWER, display_text

    out = out or sys.stdout
    shown, last = "", None
    for last in partials:
        text = display_text(last, final=False)
        if text.startswith(shown) and text != shown:
            out.write(text[len(shown):])
            out.flush()
            shown = text
    if last is not None and display_text(last) == EMPTY_ANSWER and not shown:
        if empty_note is None:
            out.write(EMPTY_ANSWER)
            shown = EMPTY_ANSWER
        else:
            print(EMPTY_ANSWER, file=empty_note, flush=True)
    out.flush()
    return shown


def print_boxes(session, answer: str) -> None:
    """The answer's boxes, one line each, in the original image's pixels."""
    from remoteglm.serve.grounding import box_lines

    for line in box_lines(session.boxes(answer)):
        print(line, flush=True)


def _stream_answer(session, query: str) -> None:
    print(f"{session.engine.speaker}: ", end="", flush=True)
    try:
        answer = print_answer(session.stream(query))
    except KeyboardInterrupt:
        print(" [interrupted / 已中断]", end="")
        answer = ""
    except RemoteGLMError as e:  # e.g. the history outgrew max_length: say so, keep chatting
        print(flush=True)
        print(f"error: {e}", file=sys.stderr, flush=True)
        return
    print(flush=True)
    print_boxes(session, answer)


def _set_image(session, path: str | None) -> bool:
    try:
        session.set_image(path)
    except RemoteGLMError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return False
    return True


def interactive(session, image: str | None, first_prompt: str) -> None:
    print(BANNER.format(speaker=session.engine.speaker), flush=True)
    need_image, pending = True, None
    if image is not None:
        if _set_image(session, image):
            need_image, pending = False, first_prompt
    while True:
        if need_image:
            line = _read(IMAGE_PROMPT)
            if line is None:
                break
            path = line.strip().strip("'\"")
            if path.lower() in QUIT:
                break
            if not _set_image(session, path or None):
                continue
            need_image, pending = False, (first_prompt if path else None)
        if pending is not None:
            query, pending = pending, None
            print(f"{USER_PROMPT}{query}", flush=True)
        else:
            line = _read(USER_PROMPT)
            if line is None:
                break
            query = line.strip()
            if not query:
                continue
            if query.lower() in QUIT:
                break
            if query.lower() in CLEAR:
                session.clear()
                print("已清空历史 / history cleared", flush=True)
                continue
            if query.lower() in NEW_IMAGE:
                need_image = True
                continue
        _stream_answer(session, query)
    print("再见 / bye", flush=True)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_new_tokens < 0:
        raise RemoteGLMError("--max_new_tokens must be >= 0 (0: only --max_length limits the answer)")
    from remoteglm.serve.bootstrap import start_engine
    from remoteglm.serve.chat import ChatSession

    one_shot = args.image is not None and args.prompt is not None and not sys.stdin.isatty()
    first_prompt = args.prompt or (DEFAULT_PROMPT_EN if args.english else DEFAULT_PROMPT)
    if one_shot:  # fail on a bad image before spending time on the model
        from remoteglm.model.image import load_image

        load_image(args.image)
    engine, _, _ = start_engine(args, defaults=DEMO_DEFAULTS, seed=args.seed)
    session = ChatSession(
        engine, english=args.english, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repetition_penalty=args.repetition_penalty, max_length=args.max_length, max_new_tokens=args.max_new_tokens,
        do_sample=False if args.greedy else None,
    )
    if one_shot:
        session.set_image(args.image)
        answer = print_answer(session.stream(first_prompt), empty_note=sys.stderr)
        print()
        print_boxes(session, answer)
        return 0
    try:
        interactive(session, args.image, first_prompt)
    except KeyboardInterrupt:
        print("\n再见 / bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
