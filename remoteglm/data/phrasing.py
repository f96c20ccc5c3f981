"""What the LLM phrases: each distinct template question (``--phrase_questions``, optional) and
one conversation per image, asked in numbered JSON like the translate step and checked like it.

A phrased question must ask what its template asks about the same object and add nothing
(``check_question``); a conversation (a description first, then 1-3 of the image's questions:
``draft_conversation``) must keep every turn grounded and its fact (``check_conversation``).
Cached replies carry the digest of the checks that accepted them (``question_validator``,
``conversation_validator``) and are checked again on read when the checks change.
"""

from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import asdict

from . import faithful
from .facts import Fact, Sources, says_zh, turn_answer
from .grounding import ASKS, fact_problems, grounding_problems
from .instructions import SENTENCE_PROMPTS, pick
from .translate import parse_reply

QUESTION_KIND, QUESTION_VERSION = "question", "question-v1"
CONVERSATION_KIND, CONVERSATION_VERSION = "conversation", "conversation-v1"


# -- questions -------------------------------------------------------------------------------

QUESTION_PROMPT = """你负责改写关于遥感图像的提问，让问法自然、多样。
要求：
1. 把每个编号的问题改写成一个意思完全相同的中文问题，以“？”结尾。
2. 保留问题里的物体名称；不得加入别的物体、颜色、形状、数量、位置或评价。
3. 只写问题本身：不回答，不解释，不加称呼。
4. 只输出一个 JSON 对象，键与输入相同，不要输出别的内容。"""

CONVERSATION_PROMPT = """你负责把关于同一张遥感图像的几组问答改写成一段自然、连贯的多轮对话。
要求：
1. 轮数和顺序不变：奇数编号是提问，其后的偶数编号是它的回答。
2. 只能使用给出的问答和图像描述里的信息：不得添加没有提到的物体、颜色、形状、数量、位置，也不要加入感受或评价。
3. 回答的事实不变：是或否、数量、颜色、形状和位置都与原来的回答一致。
4. 不要道歉，不要解释，不要提到“描述”“句子”或这些要求。
5. 只输出一个 JSON 对象，键与输入相同，不要输出别的内容。"""


def clean_reply(text: str, question: bool) -> str:
    """A reply item without a 问：/答： label, quotes or doubled stops; a question ends in ？."""
    text = re.sub(r"^\s*(?:问|答|Q|A)\s*[：:]\s*", "", str(text).strip().strip('"“”'))
    text = re.sub(r"([。！？?])[\s。.]+$", r"\1", text)  # "…？。" / "…。。" -> one stop
    if question:
        text = re.sub(r"[?？]$", "？", text)
    return text.strip()


def question_key(fact: Fact) -> str:
    return json.dumps([fact.what, fact.obj, fact.question], ensure_ascii=False)


def check_question(key: str, phrased: str) -> list[str]:
    """A phrased question against its template: the same object and kind of question, nothing added."""
    what, obj, template = json.loads(key)
    src = Sources((), (template,), "")
    problems = grounding_problems(phrased, src, allow=(obj,), question=True)
    if not phrased.endswith("？"):
        problems.append("问题要以“？”结尾")
    if not any(w in phrased for w in ASKS[what]):
        problems.append(f"问题没有问原来的内容（{'/'.join(ASKS[what])}）")
    if not says_zh(phrased, obj):
        problems.append(f"没有提到{obj}")
    return problems


@functools.lru_cache(maxsize=1)
def question_validator() -> str:
    return faithful.validator_version(check_question, grounding_problems)


def question_still_valid(key: str, phrased: str, status: str) -> bool:
    return status == "fallback" and phrased == json.loads(key)[2] or not check_question(key, phrased)


# -- conversations -------------------------------------------------------------------------------

def draft_conversation(src: Sources, facts: list[Fact], seed: int, key: str) -> list[Fact]:
    """2-4 facts in the order of the conversation: a description first, then some of the
    image's questions; [] when the image has fewer than one question to follow it."""
    if not facts:
        return []
    distinct = list(dict.fromkeys(src.zh))
    i = src.zh.index(pick(distinct, seed, key, "conv-describe"))
    describe = Fact("conversation", "describe", "", src.zh[i], pick(SENTENCE_PROMPTS, seed, key, "conv-q"), (i,))
    rng = random.Random(f"{seed}|{key}|conv")
    n = rng.randint(1, min(3, len(facts)))
    return [describe] + rng.sample(facts, n)


def conversation_key(src: Sources, turns: list[Fact]) -> str:
    """The cache key: everything the checks need (captions and the facts of the draft)."""
    return json.dumps({"en": src.en, "zh": src.zh, "cls": src.cls_zh, "facts": [asdict(f) for f in turns]},
                      ensure_ascii=False, sort_keys=True)


def _from_key(key: str) -> tuple[Sources, list[Fact]]:
    d = json.loads(key)
    facts = [Fact(**{**f, "evidence": tuple(f["evidence"])}) for f in d["facts"]]
    return Sources(tuple(d["en"]), tuple(d["zh"]), d["cls"]), facts


def conversation_messages(src: Sources, turns: list[Fact], problems: list[str] | None = None) -> list[dict]:
    items = {}
    for k, f in enumerate(turns):
        items[str(2 * k + 1)] = f.question
        items[str(2 * k + 2)] = turn_answer(f)
    user = "对话：\n" + json.dumps(items, ensure_ascii=False) + "\n图像的描述（只能使用这些信息）：\n" + "\n".join(
        dict.fromkeys(src.zh))
    if problems:
        user = f"上一次的对话有问题（{'；'.join(problems[:6])}），请重新改写。\n" + user
    return [{"role": "system", "content": CONVERSATION_PROMPT}, {"role": "user", "content": user}]


def check_conversation(src: Sources, turns: list[Fact], items: list[str | None]) -> list[str]:
    """Problems of a phrased conversation: every turn grounded and keeping its fact."""
    if len(items) != 2 * len(turns):
        return [f"应有 {2 * len(turns)} 项"]
    problems = []
    for k, f in enumerate(turns):
        q, a = items[2 * k], items[2 * k + 1]
        if not q or not a:
            problems.append(f"缺少第{2 * k + 1 if not q else 2 * k + 2}项")
            continue
        problems += [f"第{2 * k + 1}、{2 * k + 2}项的{p}" for p in fact_problems(f, q, a, src)]
    return problems


def parse_conversation(reply: str, turns: list[Fact]) -> list[str | None]:
    items = parse_reply(reply, 2 * len(turns))
    return [None if x is None else clean_reply(x, question=(i % 2 == 0)) for i, x in enumerate(items)]


@functools.lru_cache(maxsize=1)
def conversation_validator() -> str:
    return faithful.validator_version(check_conversation, fact_problems, grounding_problems, conversation_still_valid)


def conversation_still_valid(key: str, result: str, status: str) -> bool:
    if status == "dropped":  # every reply was read and failed the checks of its time: not asked again;
        return bool(json.loads(result))  # a drop that recorded no problems (older versions) is asked again
    src, turns = _from_key(key)
    return not check_conversation(src, turns, json.loads(result))
