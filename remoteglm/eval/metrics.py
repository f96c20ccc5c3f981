"""Caption metrics for Chinese: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D against all references.

Every metric works on token lists, so one implementation serves both tokenisations that Chinese
captioning papers report:

- word level: jieba 0.42.1 with the project's remote-sensing glossary as user dictionary
  (``remoteglm.data.tokenize_zh``: "储油罐" stays one word), punctuation dropped;
- char level: one token per Chinese character, a run of Latin letters / digits as one token,
  punctuation and spaces dropped.

Definitions follow the COCO caption evaluation code (pycocoevalcap), and give the same numbers on
the same tokens (tests/eval/test_metrics.py checks it):

- BLEU: corpus level, clipped n-gram counts against the max count over the references, brevity
  penalty from the reference length closest to each hypothesis (ties: the shorter one). With no
  matching n-gram of order n at all, BLEU-n is 0 here; pycocoevalcap's smoothing epsilons give a
  tiny positive number there (about 1e-5 for BLEU-4). Everywhere else the two agree to 1e-6.
- ROUGE-L: per image, LCS precision and recall, each the max over references, F with beta 1.2;
  the corpus score is the mean over images.
- CIDEr-D: tf-idf n-gram vectors (n = 1..4), idf from the references of the evaluated images,
  clipped cosine similarity times a Gaussian length penalty (sigma 6), mean over n and over
  references, times 10; the corpus score is the mean over images. Because the idf comes from
  the evaluated images, a single image always scores 0, and scores are only comparable between
  runs on the same image set.
- METEOR: the nltk variant (Banerjee & Lavie 2005 parameters alpha 0.9, beta 3, gamma 0.5),
  exact then Porter-stem matching, no WordNet synonyms (English WordNet has no Chinese entries,
  so it would match nothing in Chinese captions); per image the max over references, corpus
  score the mean over images. It is not the Java METEOR 1.5 of pycocoevalcap, whose numbers differ.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable, Mapping, Sequence

Tokens = list[str]

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")
LEVELS = ("word", "char")
LEVEL_NOTES = {
    "word": "word level: jieba 0.42.1 + the remote-sensing glossary as user dictionary, punctuation removed",
    "char": "char level: one token per Chinese character (a Latin/digit run is one token), punctuation removed",
}
METEOR_VARIANT = ("METEOR: nltk variant (alpha 0.9, beta 3, gamma 0.5), exact + Porter-stem matching, "
                  "no WordNet synonyms; not the Java METEOR 1.5")
CIDER_NOTE = "CIDEr-D: idf from the references of the evaluated images (scores compare only on the same image set)"

_PUNCT = re.compile(r"[\W_]+")
_CHAR_TOKEN = re.compile(r"[A-Za-z0-9]+|[^\W_]", re.UNICODE)


# ---- tokenisation ----------------------------------------------------------------------------------
def tokenize_words(text: str) -> Tokens:
    """Word tokens: jieba + glossary user dictionary, punctuation dropped."""
    from remoteglm.data.glossary import tokenize_zh

    return tokenize_zh(text)


def tokenize_chars(text: str) -> Tokens:
    """Char tokens: each CJK character alone, a run of ASCII letters/digits as one token."""
    out: Tokens = []
    for m in _CHAR_TOKEN.finditer(text):
        t = m.group(0)
        if t.isascii():
            out.append(t.lower())
        else:
            out.extend(t)  # a [^\W_] match is one character, but keep it safe for odd letters
    return out


TOKENIZERS: dict[str, Callable[[str], Tokens]] = {"word": tokenize_words, "char": tokenize_chars}


def char_f1(hyp: str, refs: str | Sequence[str]) -> float:
    """Character F1 of ``hyp`` against the best of ``refs`` (one string or several): bag-of-characters
    overlap as in SQuAD's token F1, on ``tokenize_chars`` tokens (punctuation dropped). 0 when either
    side has no token; 1 only for the same characters in any order."""
    h = Counter(tokenize_chars(hyp))
    best = 0.0
    for ref in [refs] if isinstance(refs, str) else refs:
        r = Counter(tokenize_chars(ref))
        common = sum((h & r).values())
        if common:
            p, rc = common / sum(h.values()), common / sum(r.values())
            best = max(best, 2 * p * rc / (p + rc))
    return best


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


# ---- BLEU ------------------------------------------------------------------------------------------
def bleu(hyps: Mapping[str, Tokens], refs: Mapping[str, Sequence[Tokens]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n (COCO style: closest reference length, no smoothing)."""
    correct, guess = [0] * n, [0] * n
    hyp_len = ref_len = 0
    for key, hyp in hyps.items():
        rs = refs[key]
        max_ref: Counter = Counter()
        for r in rs:
            for k in range(1, n + 1):
                for g, c in ngrams(r, k).items():
                    if c > max_ref[g]:
                        max_ref[g] = c
        for k in range(1, n + 1):
            counts = ngrams(hyp, k)
            guess[k - 1] += max(0, len(hyp) - k + 1)
            correct[k - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in rs)[1]
    scores, log_sum = [], 0.0
    for k in range(n):
        if correct[k] == 0 or guess[k] == 0:
            scores.extend([0.0] * (n - k))
            break
        log_sum += math.log(correct[k] / guess[k])
        scores.append(math.exp(log_sum / (k + 1)))
    if hyp_len < ref_len:
        bp = math.exp(1 - ref_len / hyp_len) if hyp_len else 0.0
        scores = [s * bp for s in scores]
    return scores


# ---- ROUGE-L ---------------------------------------------------------------------------------------
def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_one(hyp: Tokens, rs: Sequence[Tokens], beta: float = 1.2) -> float:
    if not hyp:
        return 0.0
    lcs = [lcs_length(r, hyp) for r in rs]
    p = max(l / len(hyp) for l in lcs)
    r = max(l / len(ref) for l, ref in zip(lcs, rs) if ref) if any(rs) else 0.0
    if p == 0 or r == 0:
        return 0.0
    return (1 + beta ** 2) * p * r / (r + beta ** 2 * p)


def rouge_l(hyps: Mapping[str, Tokens], refs: Mapping[str, Sequence[Tokens]]) -> tuple[float, dict[str, float]]:
    per = {k: rouge_l_one(h, refs[k]) for k, h in hyps.items()}
    return (sum(per.values()) / len(per) if per else 0.0), per


# ---- CIDEr-D ---------------------------------------------------------------------------------------
def cider_d(hyps: Mapping[str, Tokens], refs: Mapping[str, Sequence[Tokens]], n: int = 4,
            sigma: float = 6.0) -> tuple[float, dict[str, float]]:
    """CIDEr-D (clipped tf-idf cosine with length penalty), x10, idf over the given images."""
    keys = list(hyps)
    if not keys:
        return 0.0, {}
    ref_counts = {k: [_all_ngrams(r, n) for r in refs[k]] for k in keys}
    df: Counter = Counter()
    for k in keys:
        df.update({g for rc in ref_counts[k] for g in rc})
    log_n = math.log(len(keys))

    def vec(counts: Counter):
        v: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        for g, tf in counts.items():
            w = tf * (log_n - math.log(max(1.0, df[g])))
            v[len(g) - 1][g] = w
            norm[len(g) - 1] += w * w
        return v, [math.sqrt(x) for x in norm]

    per: dict[str, float] = {}
    for k in keys:
        hv, hn = vec(_all_ngrams(hyps[k], n))
        total = 0.0
        for r, rc in zip(refs[k], ref_counts[k]):
            rv, rn = vec(rc)
            penalty = math.exp(-((len(hyps[k]) - len(r)) ** 2) / (2 * sigma ** 2))
            for i in range(n):
                val = sum(min(w, rv[i].get(g, 0.0)) * rv[i].get(g, 0.0) for g, w in hv[i].items())
                if hn[i] and rn[i]:
                    val /= hn[i] * rn[i]
                total += val * penalty / n
        per[k] = 10.0 * total / len(refs[k])
    return sum(per.values()) / len(per), per


def _all_ngrams(tokens: Sequence[str], n: int) -> Counter:
    c: Counter = Counter()
    for k in range(1, n + 1):
        c.update(ngrams(tokens, k))
    return c


# ---- METEOR (nltk variant) -------------------------------------------------------------------------
_STEMMER = None


def _stem(word: str) -> str:
    global _STEMMER
    if _STEMMER is None:
        from nltk.stem.porter import PorterStemmer

        _STEMMER = PorterStemmer()
    return _STEMMER.stem(word)


def _match(hyp: list[tuple[int, str]], ref: list[tuple[int, str]]):
    """Greedy one-to-one matching, hypothesis words from the last, each to the last equal
    reference word still free (the order nltk uses, so alignments and chunk counts agree)."""
    pairs = []
    for i in range(len(hyp) - 1, -1, -1):
        for j in range(len(ref) - 1, -1, -1):
            if hyp[i][1] == ref[j][1]:
                pairs.append((hyp[i][0], ref[j][0]))
                del hyp[i], ref[j]
                break
    return pairs


def meteor_one(hyp: Tokens, ref: Tokens, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> float:
    """Sentence METEOR against one reference: exact stage, then Porter-stem stage on the rest."""
    h = [(i, w.lower()) for i, w in enumerate(hyp)]
    r = [(j, w.lower()) for j, w in enumerate(ref)]
    if not h or not r:
        return 0.0
    pairs = _match(h, r)
    hs = [(i, _stem(w)) for i, w in h]
    rs = [(j, _stem(w)) for j, w in r]
    pairs += _match(hs, rs)
    m = len(pairs)
    if m == 0:
        return 0.0
    pairs.sort()
    chunks = 1 + sum(1 for (a, b), (c, d) in zip(pairs, pairs[1:]) if not (c == a + 1 and d == b + 1))
    p, rec = m / len(hyp), m / len(ref)
    fmean = p * rec / (alpha * p + (1 - alpha) * rec)
    return (1 - gamma * (chunks / m) ** beta) * fmean


def meteor(hyps: Mapping[str, Tokens], refs: Mapping[str, Sequence[Tokens]]) -> tuple[float, dict[str, float]]:
    per = {k: max((meteor_one(h, r) for r in refs[k]), default=0.0) for k, h in hyps.items()}
    return (sum(per.values()) / len(per) if per else 0.0), per


# ---- everything at once ----------------------------------------------------------------------------
def score_tokens(hyps: Mapping[str, Tokens], refs: Mapping[str, Sequence[Tokens]]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """All metrics on tokenised input -> (corpus scores, per-image METEOR / ROUGE-L / CIDEr-D)."""
    missing = [k for k in hyps if not refs.get(k)]
    if missing:
        raise ValueError(f"no references for {missing[0]!r}")
    b = bleu(hyps, refs)
    m, m_per = meteor(hyps, refs)
    r, r_per = rouge_l(hyps, refs)
    c, c_per = cider_d(hyps, refs)
    corpus = {f"BLEU-{i + 1}": b[i] for i in range(4)} | {"METEOR": m, "ROUGE-L": r, "CIDEr-D": c}
    per = {k: {"METEOR": m_per[k], "ROUGE-L": r_per[k], "CIDEr-D": c_per[k]} for k in hyps}
    return corpus, per


def score_captions(hyps: Mapping[str, str], refs: Mapping[str, Sequence[str]], level: str = "word"):
    """Tokenise at ``level`` ("word" or "char") and score; references with no token are dropped."""
    if level not in TOKENIZERS:
        raise ValueError(f"level must be one of {LEVELS}")
    tok = TOKENIZERS[level]
    th = {k: tok(h) for k, h in hyps.items()}
    tr = {k: [t for t in (tok(r) for r in refs[k]) if t] for k in hyps}
    return score_tokens(th, tr)
