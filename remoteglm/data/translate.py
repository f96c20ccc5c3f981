"""The ``translate`` step: one faithful Chinese sentence per distinct English sentence.

Sentences are normalised and de-duplicated (UCM: 10.5k -> ~2.0k), sent several per request as
numbered JSON, and every reply item is validated; failing items are asked again in smaller
batches. Valid answers go to the cache as each reply arrives.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field

from tqdm import tqdm

from . import faithful
from .cache import ResultCache
from .glossary import find_terms, missing_terms
from .llm import LLMClient, LLMUnavailable, parallel
from .numerals import number_problems

PROMPT_VERSION = "translate-v1"  # bump when the prompt changes: old cached answers are then not reused
KIND = "translate"
SAMPLE_CHARS = 300  # of a bad answer, kept for the failures file
SPARE = 2  # asks beyond --rounds for a sentence whose answers were lost in replies unusable as a whole

SYSTEM_PROMPT = """You translate English captions of remote-sensing (aerial / satellite) images into Simplified Chinese.
Rules:
1. Translate every numbered item into exactly one fluent Chinese sentence ending with "。".
2. Be faithful: add nothing, drop nothing, no embellishment, no mood or judgement words the English does not say.
3. Use these term translations exactly: {terms}
4. No English words may remain (single capital letters describing shapes, such as T or L, may stay).
5. Reply with only one JSON object mapping each number to its translation, e.g. {{"1": "……。", "2": "……。"}} -
   the same numbers as the input, nothing before or after it."""

_CJK = re.compile(r"[\u4e00-\u9fff]")
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


@dataclass
class TranslateConfig:
    batch_size: int = 20  # sentences per request
    concurrency: int = 8  # requests in flight
    rounds: int = 3  # first ask + re-asks for items that fail validation


@dataclass
class TranslateResult:
    translations: dict[str, str]  # normalised English -> Chinese
    failed: dict[str, str] = field(default_factory=dict)  # normalised English -> last problem
    samples: dict[str, str] = field(default_factory=dict)  # normalised English -> the last bad answer (cut)
    distinct: int = 0
    cache_hits: int = 0
    new: int = 0
    aborted: str = ""  # why the run stopped early (endpoint unreachable), if it did
    aborted_kind: str = ""  # LLMUnavailable.kind of that stop


_SPACES = re.compile(r"\s+")
_TRAILING_STOPS = re.compile(r"(\s*[.。])+$")


@functools.lru_cache(maxsize=1 << 18)  # a dataset repeats its sentences; RSICD asks ~400k times for ~55k
def normalise(sentence: str) -> str:
    """Collapse spaces, drop the trailing full stop, lower-case an ordinary first capital."""
    s = _SPACES.sub(" ", sentence).strip()
    s = _TRAILING_STOPS.sub("", s).strip()
    if len(s) > 1 and s[0].isupper() and not s[1].isupper():
        s = s[0].lower() + s[1:]
    return s


def distinct_sentences(sentences: list[str]) -> list[str]:
    """Normalised sentences in first-seen order, each once."""
    return list(dict.fromkeys(normalise(s) for s in sentences if normalise(s)))


def glossary_line(sentences: list[str], extra: dict[str, str] | None = None) -> str:
    """The prompt's term pairs: the glossary terms of ``sentences``, then ``extra`` (an expression's
    object category and its name, which its check asks for: ship = 船舶 over the glossary's 船)."""
    terms: dict[str, str] = {}
    for s in sentences:
        terms.update(find_terms(s))
    terms.update(extra or {})
    return "; ".join(f"{en} = {zh}" for en, zh in sorted(terms.items())) or "(none in this batch)"


def build_messages(sentences: list[str], notes: dict[int, str] | None = None,
                   terms: dict[str, str] | None = None) -> list[dict]:
    """Chat messages for one batch: glossary (and ``terms``, English -> Chinese) in the system prompt,
    items as numbered JSON."""
    items = {str(i + 1): s for i, s in enumerate(sentences)}
    user = "Translate these captions."
    if notes:
        fixes = "; ".join(f"{i}: {p}" for i, p in sorted(notes.items()))
        user += f" Your previous answer had problems - fix them: {fixes}."
    user += "\n" + json.dumps(items, ensure_ascii=False)
    return [{"role": "system", "content": SYSTEM_PROMPT.format(terms=glossary_line(sentences, terms))},
            {"role": "user", "content": user}]


class ReplyError(ValueError):
    """The reply as a whole is unusable (not JSON, wrong numbering)."""


def parse_reply(text: str, n: int) -> list[str | None]:
    """The n translations from a numbered-JSON reply (code fences and chatter around it tolerated).

    An item the reply left out is None (only it is asked again: the others are good answers);
    numbers outside 1..n mean the numbering cannot be trusted, so the whole reply is refused."""
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise ReplyError("reply is not a JSON object")
    try:
        obj = json.loads(body[start : end + 1])
    except json.JSONDecodeError as e:
        raise ReplyError(f"reply is malformed JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ReplyError("reply is not a JSON object")
    expected = {str(i + 1) for i in range(n)}
    keys = set(map(str, obj))
    if not keys & expected or keys - expected:
        raise ReplyError(f"reply numbers its {len(obj)} items differently from the {n} sentences asked")
    obj = {str(k): v for k, v in obj.items()}
    return [str(obj[str(i + 1)]).strip() if str(i + 1) in obj else None for i in range(n)]


def check_translation(english: str, chinese: str) -> list[str]:
    """Problems with one translation; empty when it is acceptable.

    Besides Chinese present, no English left and the glossary terms used, the translation must be
    a translation (no refusal, filler or talk about the task), must not add mood words, distinctive
    objects or numbers its English does not say, must keep the English numbers, and must be of a
    length the English could have.
    """
    if not chinese:
        return ["empty translation"]
    problems = []
    if not _CJK.search(chinese):
        problems.append("no Chinese in the translation")
    allowed = {w for w in re.findall(r"[A-Za-z]+", english) if w.isupper()}
    leftover = [w for w in re.findall(r"[A-Za-z]{2,}", chinese) if w not in allowed]
    if leftover:
        problems.append(f"English left untranslated: {' '.join(leftover[:5])}")
    missing = missing_terms(english, chinese)
    if missing:
        problems.append(f"glossary term missing: {', '.join(missing)}")
    meta = faithful.meta_text(chinese, english=english)
    if meta:
        problems.append("not only the translation (" + "; ".join(f'{kind} "{phrase}"' for kind, phrase in meta)
                        + "): answer with the translation alone")
    mood = faithful.invented_mood(chinese, english=english)
    if mood:
        problems.append(f"mood or judgement words the English does not say: {', '.join(mood)}")
    objects = faithful.invented_objects(chinese, english)
    if objects:
        problems.append(f"objects the English does not mention: {', '.join(objects)}")
    lost, invented = number_problems(english, chinese)
    if lost:
        problems.append(f"number of the English missing: {', '.join(map(str, lost))}")
    if invented:
        problems.append(f"number the English does not say: {', '.join(map(str, invented))}")
    length = faithful.translation_length_problem(english, chinese)
    if length and not meta:
        problems.append("translation far shorter than the English: something was dropped" if length == "short"
                        else "translation far longer than the English: something was added")
    return problems


def check_expression(english: str, chinese: str, category: str, name: str) -> list[str]:
    """Problems with the translation of a referring expression of an object of ``category`` (Chinese
    ``name``): those of any translation, and it must name the category (the sentence alone may say
    "the white one") and add no colour, shape or position the English does not say."""
    problems = check_translation(english, chinese)
    if not faithful.names_object(chinese, name):
        problems.append(f"the object is a {category}: name it {name}")
    invented = faithful.invented_attributes(chinese, [], english=english)
    if invented:
        problems.append(f"colour, shape or position the English does not say: {', '.join(invented)}")
    return problems


@functools.lru_cache(maxsize=1)
def validator() -> str:
    """The version of the checks that accept a translation (cached answers of another are re-checked)."""
    return faithful.validator_version(check_translation)


def _still_valid(english: str, chinese: str, _status: str) -> bool:
    return not check_translation(english, chinese)


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def estimate(todo: list[str], batch_size: int) -> dict[str, int]:
    """Rough calls/tokens for translating ``todo`` (about 4 English chars per token)."""
    calls = math.ceil(len(todo) / batch_size) if todo else 0
    system_tokens = len(SYSTEM_PROMPT) // 4 + 60  # plus a few glossary terms
    tokens_in = calls * system_tokens + sum(len(s) // 4 + 6 for s in todo)
    tokens_out = sum(int(len(s) * 0.4) + 8 for s in todo)  # ~0.4 Chinese tokens per English char
    return {"sentences": len(todo), "calls": calls, "tokens_in": tokens_in, "tokens_out": tokens_out}


class Translator:
    """Translate normalised sentences through an LLM, cache-first.

    ``objects``: sentence -> (category, Chinese name) for referring expressions: their translations
    pass ``check_expression`` too (a cached one that does not is asked again) and the prompt gives
    the category's name."""

    def __init__(self, client: LLMClient | None, cache: ResultCache, cfg: TranslateConfig, model: str,
                 objects: dict[str, tuple[str, str]] | None = None):
        self.client, self.cache, self.cfg, self.model = client, cache, cfg, model
        self.objects = objects or {}

    def problems(self, english: str, chinese: str) -> list[str]:
        if english in self.objects:
            return check_expression(english, chinese, *self.objects[english])
        return check_translation(english, chinese)

    def cached(self, sentences: list[str]) -> dict[str, str]:
        """Cached translations; those accepted by older checks are checked again (failing ones are asked again)."""
        hits = self.cache.get_checked(KIND, self.model, PROMPT_VERSION, sentences, validator(), _still_valid)
        return {s: r for s, (r, _) in hits.items() if s not in self.objects or not self.problems(s, r)}

    def pending(self, distinct: list[str]) -> tuple[dict[str, str], list[str]]:
        """(cached translations, the sentences still to ask in their order): one cache read for all."""
        done = self.cached(distinct)
        return done, [s for s in distinct if s not in done]

    def plan(self, distinct: list[str]) -> tuple[int, int, dict[str, int]]:
        """What a dry run reports for ``distinct`` sentences: how many, how many are cached, and
        the LLM calls the rest would take (``estimate``)."""
        todo = self.pending(distinct)[1]
        return len(distinct), len(distinct) - len(todo), estimate(todo, self.cfg.batch_size)

    def _ask(self, job: tuple[list[str], dict[int, str], int]):
        """One request: (accepted, failed -> (problem, bad answer, whether the answer was the
        sentence's own), endpoint error or None). Accepted ones are cached now."""
        batch, notes = job[0], job[1]
        try:
            reply = self.client.chat(build_messages(batch, notes, dict(self.objects[s] for s in batch
                                                                       if s in self.objects)))
        except LLMUnavailable as e:
            return {}, {s: (str(e), "", False) for s in batch}, e
        try:
            outs = parse_reply(reply, len(batch))
        except ReplyError as e:  # a refusal, broken or renumbered JSON: it says nothing of any one sentence
            return {}, {s: (str(e), reply[:SAMPLE_CHARS], False) for s in batch}, None
        ok, bad = {}, {}
        for en, zh in zip(batch, outs):
            if zh is None:
                bad[en] = ("missing from the reply", "", False)
                continue
            problems = self.problems(en, zh)
            if problems:
                bad[en] = ("; ".join(problems), zh[:SAMPLE_CHARS], True)
            else:
                ok[en] = zh
        self.cache.put_many(KIND, self.model, PROMPT_VERSION, ok, validator=validator())
        return ok, bad, None

    def run(self, sentences: list[str], progress: bool = True) -> TranslateResult:
        """Each sentence is given up after ``rounds`` answers of its own that failed the checks, or
        after ``rounds`` + SPARE asks in all (a reply unusable as a whole - a refusal, broken or
        renumbered JSON, the sentence left out - is no answer of its own). The first ask goes in
        batches of ``batch_size``, each re-ask (with the problem of the last answer) in batches half
        the size of the one before. Re-asks go out as soon as a batch of them is full, while other
        asks are still out, and in a short batch once fewer than --concurrency are out: none waits
        for the slowest request of the asks before."""
        distinct = distinct_sentences(sentences)
        done, todo = self.pending(distinct)
        res = TranslateResult(translations=dict(done), distinct=len(distinct), cache_hits=len(done))
        if not todo:
            return res
        bar = tqdm(total=len(todo), unit="sent", desc="translate", disable=not progress, dynamic_ncols=True,
                   mininterval=1.0)
        rounds = max(1, self.cfg.rounds)
        asks = rounds + SPARE
        sizes = [max(1, self.cfg.batch_size >> k) for k in range(asks)]  # the k-th ask of a sentence
        problems: dict[str, tuple[str, str]] = {}  # sentence -> (problem, bad answer) of its last answer
        strikes: dict[str, int] = {}  # sentence -> failed answers of its own
        out = [0] * asks  # jobs of each ask not answered yet
        waiting: list[list[str]] = [[] for _ in range(asks)]  # sentences to ask a k-th time

        def job(k: int, batch: list[str]):
            out[k] += 1
            return batch, {i + 1: problems[s][0] for i, s in enumerate(batch) if s in problems}, k

        def on_result(job_, result):
            ok, bad, endpoint_error = result
            k = job_[2]
            out[k] -= 1
            res.translations.update(ok)
            res.new += len(ok)
            for en, (problem, sample, own) in bad.items():  # keep the last real answer seen for the report
                problems[en] = (problem, sample or problems.get(en, ("", ""))[1])
                strikes[en] = strikes.get(en, 0) + own
                if k + 1 < asks and strikes[en] < rounds and endpoint_error is None and not res.aborted:
                    waiting[k + 1].append(en)  # the endpoint down: no re-asks to hammer it with
            if endpoint_error is not None and not res.aborted:
                res.aborted, res.aborted_kind = str(endpoint_error), getattr(endpoint_error, "kind", "")
            bar.update(len(ok))
            bar.set_postfix(retry=sum(map(len, waiting)), refresh=False)
            if res.aborted:
                return []
            more = []
            idle = sum(out) < self.cfg.concurrency  # the last asks are out: a short batch now, not after them
            for n in range(1, asks):  # full batches now; the last, short one once nothing can add to it
                closed = idle or all(out[j] == 0 and not (j and waiting[j]) for j in range(n))
                while waiting[n] and (len(waiting[n]) >= sizes[n] or closed):
                    batch, waiting[n] = waiting[n][:sizes[n]], waiting[n][sizes[n]:]
                    more.append(job(n, batch))
            return more

        def ask(job_):
            if res.aborted:
                return {}, {s: (res.aborted, "", False) for s in job_[0]}, None
            return self._ask(job_)

        # A client that holds the requests in flight to --concurrency gets twice the threads: those
        # waiting to retry (Retry-After, backoff) leave their request slot to the others meanwhile.
        # (Not at --concurrency 1: there the requests go strictly one after another, in order.)
        c = self.cfg.concurrency
        threads = 2 * c if c > 1 and getattr(self.client, "in_flight", None) else c
        parallel(ask, [job(0, b) for b in _batches(todo, sizes[0])], threads, on_result)
        bar.close()
        left = [s for s in todo if s not in res.translations]
        res.failed = {s: problems[s][0] for s in left}
        res.samples = {s: problems[s][1] for s in left if problems[s][1]}
        return res


def translate_cached(texts: list[str], llm, cache_path, cfg: TranslateConfig, s, *, objects: dict | None = None,
                     dry_run: bool = False, progress: bool = True) -> TranslateResult | None:
    """``texts`` through the cached, checked translator (``objects``: normalised text -> (category,
    Chinese name), held to it), the counts into ``s`` (an ImportSummary); None for a dry run, which
    fills ``s.estimate`` and calls nothing. Connects only when something is not cached;
    ``cfg.concurrency`` is the requests in flight."""
    cache = ResultCache(cache_path, readonly=dry_run)
    try:
        translator = Translator(None, cache, cfg, llm.model, objects=objects)
        if dry_run:
            s.distinct, s.cache_hits, s.estimate = translator.plan(distinct_sentences(texts))
            return None
        translator.client = LLMClient(llm, in_flight=cfg.concurrency)
        s.usage = translator.client.usage
        tr = translator.run(texts, progress=progress)
    finally:
        cache.close()
    s.distinct, s.cache_hits, s.translated, s.failed = tr.distinct, tr.cache_hits, tr.new, len(tr.failed)
    return tr
