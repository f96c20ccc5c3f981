"""The engine every front end shares (remoteglm.serve.engine) and the answer rules of the official
chat: full-width punctuation next to Chinese (also while streaming: a shown prefix never changes),
the default cap on new tokens, the text-only prompt, and what terminals and pages show (no control
characters, a placeholder for an empty answer)."""

import io
import random

import pytest
import torch

from remoteglm.model.prompt import encode_prompt, process_partial_response, process_response
from remoteglm.serve.engine import EMPTY_ANSWER, display_text, strip_control
from remoteglm.serve.generation import Reply
from remoteglm.serve.sampling import CHAT_DEFAULTS, DEFAULT_MAX_NEW_TOKENS, DEMO_DEFAULTS, GenerationConfig
from remoteglm.serve.visualglm_engine import VisualGLMEngine


# ---- the official post-processing ---------------------------------------------------------------
def test_process_response_is_the_official_rule():
    assert process_response("  这是农田,有几条路!对吗?是的:好;完  ") == "这是农田，有几条路！对吗？是的：好；完"
    assert process_response("OK,好") == "OK，好" and process_response("好,OK") == "好，OK"  # before or after
    assert process_response("Hello, world! 3:4 a;b ok?") == "Hello, world! 3:4 a;b ok?"  # no CJK: unchanged
    assert process_response("好 , 坏") == "好 , 坏"  # only directly next to the ideograph
    assert process_response("一,鿿?") == "一，鿿？"  # U+4E00 and U+9FFF are inside the range
    assert process_response("あ,い") == "あ,い" and process_response("，。") == "，。"  # kana, full-width: not
    assert process_response("我在[[训练时间]],开始") == "我在2023年，开始"  # the placeholder first, then the rule
    assert process_response("\n 答案 \t") == "答案"


PIECES = ["中", ",", "!", "?", ":", ";", " ", "\n", "[", "]", "[[训练时间]]", "[[训练", "时间]]", "a", "，", "年"]


def test_a_streamed_prefix_never_changes_later():
    # a trailing ASCII comma after Latin text waits: the next character may be Chinese
    assert process_partial_response("There are roads,") == "There are roads"
    assert process_response("There are roads,农田") == "There are roads，农田"
    assert process_partial_response("农田,") == "农田，"  # after an ideograph it is final at once
    assert process_partial_response("时间是[[训练") == "时间是"  # may still become 2023年
    assert process_partial_response("a \n") == "a"  # the final answer is stripped
    rng = random.Random(0)
    for _ in range(20000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 9)))
        final, before = process_response(text), ""
        for k in range(len(text) + 1):
            shown = process_partial_response(text[:k])
            assert final.startswith(shown) and shown.startswith(before), (text, k, shown, before, final)
            before = shown


def test_display_text_strips_control_characters_and_marks_empty_answers():
    assert strip_control("a\x0bb\x04c\x1b[2Jd\re\tf\ng\x7fh\x85i\u202ej") == "abc[2Jde\tf\nghij"
    assert display_text("\x0b\x04") == EMPTY_ANSWER and display_text("  \n") == EMPTY_ANSWER
    assert display_text("\x0b", final=False) == ""  # still streaming: no placeholder yet
    assert display_text(" 农田\x04 ") == "农田"
    assert "空回答" in EMPTY_ANSWER and "empty answer" in EMPTY_ANSWER


# ---- through the engine -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def never_eop(tiny_checkpoint, tiny):
    """The tiny model made to never end its answer: the final hidden state is constant and <eop>'s
    logit very negative, so every answer runs to its length limit."""
    from remoteglm.model.checkpoint import load_model

    model = load_model(tiny_checkpoint)[0]
    tok = tiny[1]
    with torch.no_grad():
        ln = model.transformer.final_layernorm
        ln.weight.zero_()
        ln.bias.copy_(torch.linspace(-1, 1, ln.bias.numel()))
        model.mixins["chatglm-final"].lm_head.weight[tok.eos_token_id] = -100 * ln.bias
    return model


class ScriptedTokenizer:
    """The tiny tokenizer whose answers read as a script: k generated tokens decode to the first k
    pieces (what a model that emits exactly these pieces would show)."""

    def __init__(self, tok, pieces):
        self._tok, self.pieces = tok, pieces

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[: len(list(ids))])


SCRIPT = ["这是", "农田", ",", "有", " roads", ",", "中", "!", " [[训练", "时间]]", ","]
SCRIPTED_FINAL = "这是农田，有 roads，中！ 2023年，"


def test_engine_answers_are_post_processed_streaming_included(never_eop, tiny):
    tok = ScriptedTokenizer(tiny[1], SCRIPT)
    engine = VisualGLMEngine(never_eop, tok)
    replies = list(engine.stream(None, "描述这张图片。", do_sample=False, max_new_tokens=len(SCRIPT)))
    final = replies[-1]
    assert process_response("".join(SCRIPT)) == SCRIPTED_FINAL
    assert (final.text, final.finish_reason, final.completion_tokens) == (SCRIPTED_FINAL, "length", len(SCRIPT))
    texts = [r.text for r in replies]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # a prefix once shown stays
    assert "这是农田，有 roads" in texts  # the comma after "roads" was held back ...
    assert not any(t.endswith(",") for t in texts)  # ... and never shown as ASCII
    assert all(r.finish_reason is None for r in replies[:-1])
    # evaluation's batched answers go through the same rule
    assert engine.batch([None, None], ["a", "b"], max_new_tokens=len(SCRIPT)) == [SCRIPTED_FINAL] * 2


def test_the_engine_base_is_family_neutral(tiny):
    """``Engine`` holds no family's hooks: it cannot answer on its own, a family subclass can."""
    from remoteglm.serve.engine import Engine

    model, tok, _ = tiny
    with pytest.raises(TypeError, match="abstract"):
        Engine(model, tok)
    hooks = {"weights_label", "speaker", "_encode_images", "_generate_rows", "batch_key", "_batch",
             "prompt_tokens", "context_length", "image_fit"}
    assert Engine.__abstractmethods__ == hooks
    engine = VisualGLMEngine(model, tok)
    assert (engine.name, engine.speaker, engine.weights_label) == ("visualglm-6b", "VisualGLM", "ChatGLM weights")


def test_engine_text_only_prompt_is_the_official_one(tiny):
    model, tok, _ = tiny
    r = VisualGLMEngine(model, tok).reply(None, "你好", do_sample=False, max_new_tokens=2)
    assert r.prompt_tokens == len(tok.encode("问：你好\n答：")) == len(encode_prompt(tok, "你好", image_length=None).ids)


def test_new_tokens_are_capped_by_default_and_adjustable(never_eop, tiny):
    tok = tiny[1]
    assert DEFAULT_MAX_NEW_TOKENS == 512
    assert CHAT_DEFAULTS["max_new_tokens"] == DEMO_DEFAULTS["max_new_tokens"] == 512
    assert GenerationConfig.make().max_new_tokens == 512 and GenerationConfig().max_new_tokens == 512
    engine = VisualGLMEngine(never_eop, tok)
    r = engine.reply(None, "你好", do_sample=False)
    assert (r.completion_tokens, r.finish_reason) == (512, "length")  # not on to max_length 2048
    assert engine.reply(None, "你好", do_sample=False, max_new_tokens=7).completion_tokens == 7
    n = len(tok.encode("问：你好\n答："))
    r = engine.reply(None, "你好", do_sample=False, max_new_tokens=0, max_length=n + 600)  # 0: only max_length
    assert r.completion_tokens == 600
    capped = VisualGLMEngine(never_eop, tok, max_new_tokens=5)  # a server-side cap wins over a request
    assert capped.reply(None, "你好", do_sample=False, max_new_tokens=50).completion_tokens == 5


def test_cli_and_web_flags_default_to_the_cap():
    from remoteglm.serve.cli import build_parser as cli_parser
    from remoteglm.serve.web import build_parser as web_parser

    for parser in (cli_parser(), web_parser()):
        assert parser.parse_args(["--from_pretrained", "x"]).max_new_tokens == 512
        assert parser.parse_args(["--from_pretrained", "x", "--max_new_tokens", "64"]).max_new_tokens == 64


# ---- what the CLI and the web page show -----------------------------------------------------------
def test_cli_shows_no_control_characters_and_marks_an_empty_answer(capsys):
    from remoteglm.serve.cli import _stream_answer, print_answer

    out = io.StringIO()
    print_answer(["A", "A\x1b", "A\x1b[2J", "A\x1b[2JB\x04", "A\x1b[2JB\x04\n\tC"], out)
    assert out.getvalue() == "A[2JB\n\tC"
    out = io.StringIO()
    print_answer(["", "\x0b", "\x0b\x04"], out)
    assert out.getvalue() == EMPTY_ANSWER
    out, note = io.StringIO(), io.StringIO()
    print_answer(["\x04"], out, empty_note=note)  # one-shot: stdout keeps the real (empty) answer
    assert out.getvalue() == "" and note.getvalue() == EMPTY_ANSWER + "\n"

    class Session:
        class engine:  # what the CLI asks of the engine: the name to prefix answers with
            speaker = "VisualGLM"

        def stream(self, query):
            yield from ("\x0b", "\x0b\x04")

        def boxes(self, answer):  # (an answer without boxes)
            return []

    _stream_answer(Session(), "你好")
    assert capsys.readouterr().out == f"VisualGLM: {EMPTY_ANSWER}\n"


class FakeEngine:
    def __init__(self, texts):
        self.texts, self.asked = texts, []

    def stream(self, image, query, history, **gen):
        self.asked.append(gen)
        for i, t in enumerate(self.texts):
            yield Reply(t, 3, i + 1, "stop" if i == len(self.texts) - 1 else None)


def test_web_bubble_shows_no_control_characters_and_marks_an_empty_answer():
    from remoteglm.serve.web import ask

    engine = FakeEngine(["\x0b", "\x0b\x04"])
    steps = list(ask(engine, "你好", [], None, 0.8, 0.4, 100, 2048, 7))
    messages, box, state = steps[-1]
    assert messages == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": EMPTY_ANSWER}]
    assert all(m[-1]["content"] in ("", EMPTY_ANSWER) for m, _, _ in steps)  # no bare control character shown
    assert state["history"] == [("你好", "\x0b\x04")] and box == ""
    assert engine.asked[0]["max_new_tokens"] == 7  # the slider reaches the engine
    messages = list(ask(FakeEngine(["农", "农\x04田\x1b[0m"]), "这是哪里？", [], None, 0.8, 0.4, 100, 2048, 7))[-1][0]
    assert messages[-1]["content"] == "农田[0m"
