"""ChatGLM tokenizer on a tiny sentencepiece model built like ice_text.model."""

import shutil
import time

import pytest
import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.tiny_tokenizer import ensure_tiny_tokenizer, train_tiny_tokenizer
from remoteglm.model.tokenizer import (
    OFFICIAL_IDS,
    SPECIAL_TOKENS,
    VOCAB_FILE,
    ChatGLMTokenizer,
)

ROUND_TRIP = [
    "There are many buildings and a long runway .",
    "图中有一条河流和大片农田。",
    "储油罐 棒球场 住宅区 海洋 港口",
    "鑫龘𠀀 — 生僻字也能还原",  # not in the tiny vocab: byte fallback
    "mixed 中英 text with a 跑道 and 3 tanks",
    "two  spaces, three   spaces, eighty" + " " * 80 + "and ninety" + " " * 90 + "end",
    "tab\there\t\tand two tabs",
    "line one\nline two\n\nafter a blank line\n",
    "\n leading newline and space",
    " leading space, trailing space ",
    "   ",
    "",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(tiny_tokenizer, text):
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer.convert_tokens_to_string(tiny_tokenizer.tokenize(text)) == text


def test_whitespace_becomes_glm_pieces(tiny_tokenizer):
    pieces = tiny_tokenizer.tokenize("a\tb\nc   d" + " " * 85 + "e")
    assert "<|tab|>" in pieces and "<n>" in pieces and "<|blank_3|>" in pieces
    # 85 spaces = one 80-space blank + a 5-space blank, like the official longest-first replace
    assert "<|blank_80|>" in pieces and "<|blank_5|>" in pieces
    assert not any(p.strip("▁") == "" and p != "▁" for p in pieces if not p.startswith("<"))
    # the dummy prefix: sentencepiece puts ▁ before the first word
    assert tiny_tokenizer.tokenize("hello")[0].startswith("▁")


def test_special_ids_follow_official_layout(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    official = [OFFICIAL_IDS[t] for t in SPECIAL_TOKENS]
    # Same order and spacing as 130000..130007; ids come from the model, not from constants.
    assert [i - ids[0] for i in ids] == [o - official[0] for o in official] == list(range(8))
    assert tok.mask_token_id == ids[0]
    assert tok.gmask_token_id == ids[1]
    assert tok.bos_token_id == ids[4] and tok.convert_ids_to_tokens(tok.bos_token_id) == "<sop>"
    assert tok.eos_token_id == ids[5] and tok.convert_ids_to_tokens(tok.eos_token_id) == "<eop>"
    assert tok.pad_token_id == OFFICIAL_IDS["<pad>"] == 3
    assert tok.convert_ids_to_tokens([0, 3]) == ["<unk>", "<pad>"]
    assert tok.vocab_size == tok.sp.GetPieceSize() == 1000


def test_encode_adds_gmask_sop_and_build_inputs(tiny_tokenizer):
    tok = tiny_tokenizer
    plain = tok.encode("问：图中有什么？", add_special_tokens=False)
    assert tok.encode("问：图中有什么？") == plain + [tok.gmask_token_id, tok.bos_token_id]
    a, b = [7, 8], tok.encode("农田", add_special_tokens=False)
    assert tok.build_inputs_with_special_tokens(a) == [7, 8, tok.gmask_token_id, tok.bos_token_id]
    assert tok.build_inputs_with_special_tokens(a, b) == a + [tok.gmask_token_id, tok.bos_token_id] + b + [tok.eos_token_id]
    full = tok.build_inputs_with_special_tokens(plain, b)
    # NFKC folds full-width punctuation (sentencepiece's default normaliser); b's dummy-prefix ▁
    # reads as a space mid-sequence, so decode an answer on its own, as chat does.
    assert tok.decode(full) == "问:图中有什么? 农田"
    assert tok.decode(full[len(plain) + 2 :]) == "农田"
    assert "[gMASK]<sop>" in tok.decode(full, skip_special_tokens=False)


def test_batch_left_padding(tiny_tokenizer):
    tok = tiny_tokenizer
    texts = ["农田", "There is a long runway and many airplanes ."]
    out = tok(texts, padding=True)
    short, long_ = tok.encode(texts[0]), tok.encode(texts[1])
    n = len(long_) - len(short)
    assert n > 0
    assert out["input_ids"] == [[tok.pad_token_id] * n + short, long_]
    assert out["attention_mask"] == [[0] * n + [1] * len(short), [1] * len(long_)]
    pt = tok(texts, padding=True, return_tensors="pt")
    assert pt["input_ids"].dtype == torch.long and pt["input_ids"].tolist() == out["input_ids"]
    assert pt["attention_mask"].sum().item() == len(short) + len(long_)
    assert tok.decode(pt["input_ids"][0]) == "农田"  # pads are dropped on decode
    single = tok("农田", return_tensors="pt")
    assert single["input_ids"].shape == (1, len(short))
    assert tok(texts[0])["input_ids"] == short
    assert tok(texts, padding="max_length", max_length=len(long_) + 2)["input_ids"][1][:2] == [tok.pad_token_id] * 2
    with pytest.raises(ValueError, match="padding=True"):
        tok(texts, return_tensors="pt")


def test_num_image_tokens_offset(tiny_tokenizer_path, tiny_tokenizer):
    legacy = ChatGLMTokenizer(tiny_tokenizer_path, num_image_tokens=20000)
    text = "图中有一条河流。"
    base = tiny_tokenizer.encode(text)
    assert legacy.encode(text) == [i + 20000 for i in base]
    assert legacy.vocab_size == 20000 + tiny_tokenizer.vocab_size
    assert legacy.bos_token_id == tiny_tokenizer.bos_token_id + 20000
    assert legacy.pad_token_id == 20003
    # ids below the offset are image tokens: dropped on decode, named <image_N> otherwise
    ids = [5, 19999] + legacy.encode(text, add_special_tokens=False)
    assert legacy.decode(ids) == text
    assert legacy.decode(ids, skip_special_tokens=False) == "<image_5><image_19999>" + text
    assert legacy.convert_ids_to_tokens(5) == "<image_5>"
    assert legacy.convert_tokens_to_ids("<image_5>") == 5
    assert legacy.convert_tokens_to_ids("<sop>") == legacy.bos_token_id


def test_decode_skips_specials_and_keeps_them_on_request(tiny_tokenizer):
    tok = tiny_tokenizer
    body = tok.encode("海洋", add_special_tokens=False)
    ids = [tok.mask_token_id] + body + [tok.gmask_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids) == "海洋"
    assert tok.decode(ids, skip_special_tokens=False) == "[MASK]海洋[gMASK]<sop><eop>"
    assert tok.decode(torch.tensor(body)) == "海洋"
    # ids past the pieces (the real embedding has 130528 rows for 130344 pieces) read as <unk>
    assert tok.decode(body + [tok.vocab_size, tok.vocab_size + 100]) == "海洋"
    assert tok.decode([tok.vocab_size], skip_special_tokens=False) == "<unk>"
    assert tok.convert_ids_to_tokens(tok.vocab_size + 5) == "<unk>"
    assert tok.batch_decode(torch.tensor([body, body])) == ["海洋", "海洋"]
    with pytest.raises(ValueError, match="negative"):
        tok.decode([-1])


def test_chinese_token_ids(tiny_tokenizer):
    tok = tiny_tokenizer
    zh = tok.encode("农田和河流", add_special_tokens=False)
    en = tok.encode("farmland and river", add_special_tokens=False)
    assert all(tok.is_chinese_token(i) for i in zh if tok.convert_ids_to_tokens(i) != "▁")
    assert not any(tok.is_chinese_token(i) for i in en)
    # a character outside the vocabulary is spelled in bytes: its UTF-8 lead byte counts as Chinese
    rare = tok.encode("龘", add_special_tokens=False)
    assert any(tok.is_chinese_token(i) for i in rare)
    assert not tok.is_chinese_token(tok.eos_token_id)


def test_tiny_tokenizer_is_deterministic_and_fast(tmp_path, tiny_tokenizer_path):
    t0 = time.perf_counter()
    a = train_tiny_tokenizer(tmp_path / "a" / VOCAB_FILE)
    elapsed = time.perf_counter() - t0
    b = train_tiny_tokenizer(tmp_path / "b" / VOCAB_FILE)
    assert a.read_bytes() == b.read_bytes() == tiny_tokenizer_path.read_bytes()
    assert elapsed < 5.0
    other = train_tiny_tokenizer(tmp_path / "c.model", texts=["道路 和 河流", "roads and rivers"] * 20, vocab_size=400)
    tok = ChatGLMTokenizer(other)
    assert tok.vocab_size <= 400 and tok.decode(tok.encode("河流 rivers 鑫")) == "河流 rivers 鑫"


def test_ensure_tiny_tokenizer_trains_only_when_missing(tmp_path):
    path = tmp_path / VOCAB_FILE
    assert ensure_tiny_tokenizer(path) == path and path.is_file()
    path.write_bytes(path.read_bytes())  # same content, newer mtime
    before = path.stat().st_mtime_ns
    assert ensure_tiny_tokenizer(tmp_path) == path
    assert path.stat().st_mtime_ns == before


def test_from_pretrained_file_or_directory_and_save(tmp_path, tiny_tokenizer_path):
    by_file = ChatGLMTokenizer.from_pretrained(tiny_tokenizer_path)
    by_dir = ChatGLMTokenizer.from_pretrained(tiny_tokenizer_path.parent)
    assert by_file.encode("港口") == by_dir.encode("港口")
    saved = by_file.save(tmp_path / "out")
    assert saved == tmp_path / "out" / VOCAB_FILE
    assert saved.read_bytes() == tiny_tokenizer_path.read_bytes()
    assert ChatGLMTokenizer.from_pretrained(tmp_path / "out").encode("港口") == by_file.encode("港口")


def test_missing_and_bad_files_are_one_line_errors(tmp_path, tiny_tokenizer_path):
    with pytest.raises(RemoteGLMError) as e:
        ChatGLMTokenizer.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "ice_text.model" in msg
    assert "chatglm-6b" in msg and "--tokenizer" in msg
    with pytest.raises(RemoteGLMError, match="not found"):
        ChatGLMTokenizer.from_pretrained(tmp_path / "nope.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(RemoteGLMError, match="not a sentencepiece model") as e:
        ChatGLMTokenizer(junk)
    assert "\n" not in str(e.value)
    # a valid sentencepiece model that lacks the GLM pieces
    plain = tmp_path / "plain"
    plain.mkdir()
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a plain model without glm pieces"] * 10),
        model_prefix=str(plain / "m"), vocab_size=30, hard_vocab_limit=False, minloglevel=2,
    )
    with pytest.raises(RemoteGLMError, match=r"not a ChatGLM tokenizer model \(no \[MASK\]"):
        ChatGLMTokenizer(plain / "m.model")
    shutil.copy(tiny_tokenizer_path, tmp_path / VOCAB_FILE)
    assert ChatGLMTokenizer.from_pretrained(tmp_path).vocab_size == 1000
