"""Caption metrics: hand-checked values, tokenisation, and agreement with pycocoevalcap / nltk."""

import json
import math
from pathlib import Path

import pytest

from remoteglm.eval.metrics import (bleu, char_f1, cider_d, meteor, meteor_one, rouge_l, score_captions, score_tokens,
                                    tokenize_chars, tokenize_words)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "dataset_sample_zh.json"


# ---- hand-checked values -----------------------------------------------------------------------------
def test_identical_caption_scores_one():
    cap = ["河流", "穿过", "茂密", "的", "森林"]
    corpus, per = score_tokens({"a": cap}, {"a": [cap]})
    assert [corpus[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx([1, 1, 1, 1])
    assert corpus["ROUGE-L"] == pytest.approx(1.0)
    # METEOR: P = R = 1, one chunk of 5 matches -> penalty 0.5 * (1/5)^3
    assert corpus["METEOR"] == pytest.approx(1 - 0.5 * (1 / 5) ** 3)
    # CIDEr-D's idf comes from the evaluated images: with one image every n-gram has idf 0
    assert corpus["CIDEr-D"] == 0.0


def test_char_f1_by_hand():
    assert char_f1("有许多不同颜色的农田。", "有许多不同颜色的农田") == 1.0  # punctuation does not count
    assert char_f1("田农", "农田") == 1.0  # a bag of characters: order does not count
    assert char_f1("海洋", "农田") == 0.0
    assert char_f1("", "农田") == char_f1("农田", []) == 0.0
    # 农田 shared: P = 2/4, R = 2/3 -> F1 = 2PR / (P + R) = 4/7
    assert char_f1("农田很大", "农田的") == pytest.approx(4 / 7)
    # several references: the best one counts; a Latin run is one token
    assert char_f1("许多ll。", ["海洋", "有许多不同颜色的农田。"]) == pytest.approx(2 * (2 / 3) * (2 / 10) / (2 / 3 + 2 / 10))


def test_disjoint_caption_scores_zero():
    corpus, _ = score_tokens({"a": ["海洋", "上", "有", "船"]}, {"a": [["农田", "旁边", "是", "道路"]]})
    assert all(v == 0.0 for v in corpus.values()), corpus


def test_partial_overlap_by_hand():
    hyp = ["河流", "穿过", "森林", "中间"]
    ref = ["河流", "穿过", "农田", "旁边"]
    b = bleu({"a": hyp}, {"a": [ref]})
    assert b[0] == pytest.approx(2 / 4)  # 2 of 4 unigrams
    assert b[1] == pytest.approx(math.sqrt(2 / 4 * 1 / 3))  # 1 of 3 bigrams
    assert b[2] == b[3] == 0.0
    assert rouge_l({"a": hyp}, {"a": [ref]})[0] == pytest.approx(0.5)  # LCS 2: P = R = 0.5
    # METEOR: m = 2, P = R = 0.5 -> Fmean 0.5; one chunk -> penalty 0.5 * (1/2)^3
    assert meteor_one(hyp, ref) == pytest.approx(0.5 * (1 - 0.5 * 0.125))


def test_bleu_closest_reference_length_and_clipping():
    hyp = ["河流", "穿过"]
    refs = [["河流", "穿过", "森林", "中间"], ["一条", "河流", "穿过", "农田", "旁边", "的", "道路"]]
    b = bleu({"a": hyp}, {"a": refs})
    # closest reference has 4 tokens -> brevity penalty exp(1 - 4/2); both precisions are 1
    assert b[0] == pytest.approx(math.exp(-1))
    assert b[1] == pytest.approx(math.exp(-1))
    # ROUGE-L: precision max 2/2, recall max 2/4 -> F_beta with beta 1.2
    p, r = 1.0, 0.5
    assert rouge_l({"a": hyp}, {"a": refs})[0] == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))
    # a repeated word counts at most as often as in the reference that has it most
    clipped = bleu({"a": ["树", "树", "树"]}, {"a": [["树"], ["树", "树"]]})
    assert clipped[0] == pytest.approx(2 / 3)


def test_cider_d_two_images():
    # image a: hypothesis equals its only reference; b: nothing in common. Every n-gram occurs in
    # one image's references, so idf = log(2) everywhere and a's vectors are identical.
    a = ["一条", "道路", "穿过", "森林", "中间"]
    corpus, per = cider_d({"a": a, "b": ["海洋"]}, {"a": [a], "b": [["农田", "很", "大"]]})
    assert per["a"] == pytest.approx(10.0)
    assert per["b"] == 0.0
    assert corpus == pytest.approx(5.0)
    # the Gaussian length penalty: one extra unseen word costs exp(-1/72) on every n-gram order
    longer, _ = cider_d({"a": a + ["和"], "b": ["海洋"]}, {"a": [a], "b": [["农田", "很", "大"]]})
    assert longer < corpus


def test_meteor_stem_stage_and_empty():
    assert meteor_one(["roads"], ["road"]) == pytest.approx(0.5)  # stem match; 1 match = 1 chunk
    assert meteor_one([], ["road"]) == 0.0
    assert meteor({"a": ["森林"]}, {"a": [["农田"], ["森林"]]})[0] == pytest.approx(0.5)  # best reference counts


def test_empty_hypothesis_scores_zero():
    corpus, _ = score_captions({"a": "", "b": "。"}, {"a": ["森林。"], "b": ["一条道路。"]}, "char")
    assert all(v == 0.0 for v in corpus.values())


# ---- tokenisation ----------------------------------------------------------------------------------
def test_word_tokens_keep_glossary_terms():
    toks = tokenize_words("一个储油罐旁边有停车场。")
    assert "储油罐" in toks and "停车场" in toks
    assert "。" not in toks


def test_char_tokens():
    assert tokenize_chars("有3个储油罐, GPS站！") == ["有", "3", "个", "储", "油", "罐", "gps", "站"]


def test_levels_differ_on_near_miss():
    # 树林 vs 树木: no common word, but one common character
    w, _ = score_captions({"a": "树林"}, {"a": ["树木"]}, "word")
    c, _ = score_captions({"a": "树林"}, {"a": ["树木"]}, "char")
    assert w["BLEU-1"] == 0.0 and c["BLEU-1"] == pytest.approx(0.5)


# ---- agreement with the reference implementations -----------------------------------------------------
def _fixed_inputs(tokenize):
    """Sample captions: sentence 0 of each image scored against its other four (leave-one-out
    human baseline), two captions scored against another image's references, and two that
    extend a reference (so that 4-grams match: BLEU-4 = 0 would hide pycocoevalcap's smoothing
    epsilon)."""
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    hyps, refs = {}, {}
    for im in data["images"]:
        sents = [s["raw"] for s in im["sentences"]]
        hyps[im["filename"]] = tokenize(sents[0])
        refs[im["filename"]] = [tokenize(s) for s in sents[1:]]
    names = [im["filename"] for im in data["images"]]
    for name, im in zip(names[2:4], data["images"][2:4]):
        hyps[name] = tokenize(im["sentences"][1]["raw"].rstrip("。") + "，周围很安静。")
    hyps[names[0]], hyps[names[1]] = hyps[names[1]], hyps[names[0]]
    return hyps, refs


@pytest.mark.parametrize("tokenize", [tokenize_words, tokenize_chars], ids=["word", "char"])
def test_agrees_with_pycocoevalcap(tokenize):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = _fixed_inputs(tokenize)
    res = {k: [" ".join(v)] for k, v in hyps.items()}
    gts = {k: [" ".join(r) for r in v] for k, v in refs.items()}
    ours, per = score_tokens(hyps, refs)

    coco_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [ours[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(coco_bleu, abs=1e-6)
    coco_rouge, coco_rouge_per = Rouge().compute_score(gts, res)
    assert ours["ROUGE-L"] == pytest.approx(coco_rouge, abs=1e-9)
    assert [per[k]["ROUGE-L"] for k in gts] == pytest.approx(list(coco_rouge_per), abs=1e-9)
    coco_cider, coco_cider_per = Cider().compute_score(gts, res)
    assert ours["CIDEr-D"] == pytest.approx(coco_cider, abs=1e-9)
    assert [per[k]["CIDEr-D"] for k in gts] == pytest.approx(list(coco_cider_per), abs=1e-9)
    assert 0 < ours["BLEU-4"] < ours["BLEU-1"] < 1 and ours["CIDEr-D"] > 0  # a real, non-trivial case


class _NoSynonyms:
    """Stands in for WordNet: English synonyms never match Chinese words; exact + stem remain."""

    def synsets(self, word):
        return []


@pytest.mark.parametrize("tokenize", [tokenize_words, tokenize_chars, str.split], ids=["word", "char", "english"])
def test_meteor_agrees_with_nltk(tokenize):
    from nltk.translate.meteor_score import meteor_score

    if tokenize is str.split:  # English, where the stem stage matters
        hyps = {"a": "two planes are parked near the runways".split(), "b": "many houses and roads".split()}
        refs = {"a": ["a plane is parked near a runway".split(), "two airplanes park beside the runway".split()],
                "b": ["there are many buildings and a road".split()]}
    else:
        hyps, refs = _fixed_inputs(tokenize)
    ours, per = meteor(hyps, refs)
    theirs = {k: meteor_score(refs[k], hyps[k], wordnet=_NoSynonyms()) for k in hyps}
    assert [per[k] for k in hyps] == pytest.approx([theirs[k] for k in hyps], abs=1e-12)
    assert ours == pytest.approx(sum(theirs.values()) / len(theirs))
    assert 0 < ours < 1
