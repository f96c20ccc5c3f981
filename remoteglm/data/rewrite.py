"""The optional ``rewrite`` step: one fluent paragraph per image, faithful to its sentences.

RemoteGLM's paragraphs often carry mood words (感觉, 生机, 宁静 ...) or objects no caption
mentions. Each paragraph here is checked against its source sentences; a failing one is asked
again with the problems named, and after the last try the image falls back to its translated
sentences joined together.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field

from tqdm import tqdm

from . import faithful
from .cache import ResultCache
from .llm import LLMClient, LLMUnavailable, parallel
from .numerals import invented_numbers

PROMPT_VERSION = "rewrite-v1"
KIND = "rewrite"

SYSTEM_PROMPT = """你负责把同一张遥感图像的几句中文描述合并成一段通顺的中文描述。
要求：
1. 只使用这些句子里已有的信息：不得添加句子中没有的物体、颜色、数量或位置关系。
2. 不得加入感受、评价或氛围描写（例如 感觉、生机、美丽、宁静、活力、氛围），除非原句本身这样说。
3. 重复的信息只说一次；沿用原句中的用词。
4. 只输出这一段话，不要编号、引号或解释。"""

_CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass
class RewriteConfig:
    concurrency: int = 8
    rounds: int = 3  # tries per image before falling back to the joined sentences


@dataclass
class RewriteResult:
    labels: dict[str, str]  # source key -> paragraph
    rewritten: int = 0  # accepted paragraphs (new this run)
    fallbacks: int = 0  # images that fell back to their joined sentences (new this run)
    rejected: int = 0  # replies that failed the checks (new this run)
    cache_hits: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # key -> endpoint error (rerun later)
    examples: list[str] = field(default_factory=list)  # a few rejection reasons, for the report
    aborted: str = ""  # why the run stopped early (endpoint unreachable), if it did
    aborted_kind: str = ""  # LLMUnavailable.kind of that stop


def source_key(sentences: list[str]) -> str:
    """The cache key of an image's Chinese sentences (order kept, repeats dropped)."""
    return "\n".join(dict.fromkeys(s.strip() for s in sentences if s.strip()))


def fallback_label(sentences: list[str]) -> str:
    """The translated sentences joined, each ending with 。: faithful by construction."""
    return "".join(s if s.endswith(("。", "！", "？")) else s + "。" for s in source_key(sentences).split("\n"))


def build_messages(sentences: list[str], problems: list[str] | None = None) -> list[dict]:
    user = "描述：\n" + json.dumps({"sentences": sentences}, ensure_ascii=False)
    if problems:
        user = f"上一次的段落有问题（{'；'.join(problems)}），请重新合并。\n" + user
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def check_rewrite(paragraph: str, sources: list[str]) -> list[str]:
    """Problems with a paragraph merged from ``sources`` (checked translations); empty when acceptable.

    It must be a description (no refusal, filler, question or talk about the task), add nothing
    (no mood words, nouns or numbers the sources lack, no English), keep what each source says
    (its glossary terms, numbers and most of its nouns) and be of a sane length.
    """
    text = paragraph.strip()
    if not _CJK.search(text):
        return ["段落为空或没有中文"]
    problems = []
    meta = faithful.meta_text(text, sources)
    if meta:
        problems.append(f"这不是描述本身，含有道歉、拒绝、客套话、提问、编号或对任务的说明（{'、'.join(p for _, p in meta)}），"
                        "只输出合并后的那段描述")
    banned = faithful.invented_mood(text, sources)
    if banned:
        problems.append(f"加入了原句没有的词：{'、'.join(banned)}")
    if re.search(r"[A-Za-z]{2,}", text):
        problems.append("含有英文")
    invented = faithful.invented_nouns(text, sources, skip=banned)
    if invented:
        problems.append(f"原句没有提到：{'、'.join(invented)}")
    numbers = invented_numbers(text, sources)
    if numbers:
        problems.append(f"原句没有这些数量：{'、'.join(map(str, numbers))}")
    lost = faithful.coverage_problems(text, sources)
    if lost and not meta:
        problems.append("漏掉了原句的内容：" + "；".join(f"第{i}句的{'、'.join(what)}" for i, what in lost))
    elif lost:
        problems.append(f"没有保留原句的内容（{len(lost)}/{len(sources)} 句缺失）")
    length = faithful.length_problem(text, sources)
    if length == "short" and not lost:
        problems.append("段落太短，漏掉了原句的内容")
    elif length == "long":
        problems.append("段落比原句总和还长很多")
    return problems


@functools.lru_cache(maxsize=1)
def validator() -> str:
    """The version of the checks that accept a paragraph (cached ones of another are re-checked)."""
    return faithful.validator_version(check_rewrite, fallback_label)


def _still_valid(key: str, label: str, status: str) -> bool:
    """A cached paragraph passes today's checks; a cached fallback is the joined sentences."""
    sources = key.split("\n")
    if status == "fallback":
        return label == fallback_label(sources)
    return not check_rewrite(label, sources)


class Rewriter:
    def __init__(self, client: LLMClient | None, cache: ResultCache, cfg: RewriteConfig, model: str):
        self.client, self.cache, self.cfg, self.model = client, cache, cfg, model

    def _one(self, key: str) -> tuple[str, str, int, str]:
        """(label, status 'ok'|'fallback'|'failed', rejected replies, reason)."""
        sources = key.split("\n")
        problems: list[str] = []
        rejected = 0
        for _ in range(self.cfg.rounds):
            try:
                reply = self.client.chat(build_messages(sources, problems))
            except LLMUnavailable as e:
                return "", "failed", rejected, e
            paragraph = reply.strip().strip('"“”')
            problems = check_rewrite(paragraph, sources)
            if not problems:
                self.cache.put_many(KIND, self.model, PROMPT_VERSION, {key: paragraph}, status="ok",
                                     validator=validator())
                return paragraph, "ok", rejected, ""
            rejected += 1
        label = fallback_label(sources)
        self.cache.put_many(KIND, self.model, PROMPT_VERSION, {key: label}, status="fallback",
                             validator=validator())
        return label, "fallback", rejected, "；".join(problems)

    def run(self, images_sentences: list[list[str]], progress: bool = True) -> RewriteResult:
        keys = list(dict.fromkeys(source_key(s) for s in images_sentences))
        # Paragraphs accepted by older checks are checked again; a failing one is asked again.
        hits = self.cache.get_checked(KIND, self.model, PROMPT_VERSION, keys, validator(), _still_valid)
        res = RewriteResult(labels={k: v for k, (v, _) in hits.items()}, cache_hits=len(hits))
        todo = []
        for k in keys:
            if k in hits:
                continue
            if "\n" not in k:  # one distinct sentence: nothing to merge, no call needed
                res.labels[k] = fallback_label([k])
            else:
                todo.append(k)
        bar = tqdm(total=len(todo), unit="img", desc="rewrite", disable=not progress or not todo,
                   dynamic_ncols=True, mininterval=1.0)

        def on_result(key, out):
            label, status, rejected, reason = out
            res.rejected += rejected
            if status == "failed":
                res.failed[key] = str(reason)
                if not res.aborted:
                    res.aborted, res.aborted_kind = str(reason), getattr(reason, "kind", "")
            else:
                res.labels[key] = label
                res.rewritten += status == "ok"
                res.fallbacks += status == "fallback"
            if reason and status == "fallback" and len(res.examples) < 5 and reason not in res.examples:
                res.examples.append(reason)
            bar.update(1)

        def one(key):
            if res.aborted:  # the endpoint is down: do not hammer it with the rest
                return "", "failed", 0, res.aborted
            return self._one(key)

        parallel(one, todo, self.cfg.concurrency, on_result)
        bar.close()
        return res
