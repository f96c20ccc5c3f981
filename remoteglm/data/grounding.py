"""The grounding check of instruction items: what a question or an answer says that the image's
own captions do not, and whether it still asks and says the fact it was built from.

``grounding_problems``: no English, no refusal or chatter, no mood word, no object, noun, number,
colour, shape or position that no caption says, and no colour said of an object the captions give
another colour (``colours.py``); the 否 object is the one allowed exception, and only behind a
negation. ``fact_problems``: both grounded, and the answer keeps the fact (the polarity, the
number bound to its caption, the colours, all of a position's caption).
"""

from __future__ import annotations

import re

from . import colours, faithful
from .facts import POSITION_GROUPS, Fact, Sources, names_object, said_colours, says_zh, turn_answer
from .numerals import chinese_numbers, invented_numbers

# What a question of each kind must still ask after the LLM phrased it.
ASKS = {"yes": ("吗", "是否", "有没有", "有无"), "no": ("吗", "是否", "有没有", "有无"), "number": ("多少", "几"),
        "colour": ("颜色", "什么色"), "shape": ("形状", "什么样"), "position": ("位置", "哪", "什么地方", "何处"),
        "describe": ()}
# Nouns a question about the image may use besides the generic ones (faithful_words.GENERIC_NOUNS).
QA_WORDS = ("图", "幅", "张", "图中", "话", "航拍", "卫星", "内容", "地物", "物体", "东西")

_ENGLISH = re.compile(r"[A-Za-z]{2,}")
_POLARITY = re.compile(r"^\s*(?:是的|是|对|有的|否|不是|没有|不对)\s*[，,。！!]?\s*")
_NEGATION = re.compile(r"否|没有|不是|并无|未见|看不到|不存在|无")
_NUMBER_ONLY = re.compile(r"\s*\d+\s*[。.]?\s*")  # a count's answer: "2"


def grounding_problems(text: str, src: Sources, allow: tuple[str, ...] = (), question: bool = False) -> list[str]:
    """What ``text`` (a question or an answer about the image) says that its captions do not.

    No English, no refusal / chatter / talk about the task (a question may ask), no mood or
    judgement word, and no object, noun, number, colour, shape or position that no caption says;
    ``allow`` holds what the question itself is about (the object of a 否 question).
    """
    if not faithful.cjk_len(text) and not _NUMBER_ONLY.fullmatch(text):
        return ["没有中文"]
    zh = list(src.zh)
    problems = []
    if _ENGLISH.search(text):
        problems.append("含有英文")
    meta = [p for kind, p in faithful.meta_text(_POLARITY.sub("", text, count=1), zh)
            if not (question and kind == "question")]
    if meta:
        problems.append(f"含有道歉、拒绝、客套话或对任务的说明（{'、'.join(meta)}）")
    mood = faithful.invented_mood(text, zh)
    if mood:
        problems.append(f"加入了描述没有的感受或评价：{'、'.join(mood)}")
    objects = [o for o in faithful.invented_objects(text, src.english) if not any(o in a or a in o for a in allow)
               and not any(o in z for z in zh)]
    looks = [form for form, _ in faithful.attributes_zh(text)]  # colours etc.: checked below, not as nouns
    nouns = faithful.invented_nouns(text, zh + [src.cls_zh, *allow, *QA_WORDS], skip=mood + objects + looks)
    if objects or nouns:
        problems.append(f"描述没有提到：{'、'.join(dict.fromkeys(objects + nouns))}")
    numbers = invented_numbers(text, zh)
    if numbers:
        problems.append(f"描述没有这些数量：{'、'.join(map(str, numbers))}")
    attrs = faithful.invented_attributes(text, zh + list(allow), src.english)
    if attrs:
        problems.append(f"描述没有这些颜色、形状或位置：{'、'.join(attrs)}")
    moved = [f"{obj}是{c}" for c, obj in colours.misplaced(text, said_colours(src) | colours.tied(allow))
             if c not in attrs]
    if moved:
        problems.append(f"描述没有说{'、'.join(moved)}的")
    return problems


def _numbers(text: str) -> set[int]:
    exact, approx, _ = chinese_numbers(text, places=False)
    return exact | approx


def fact_problems(fact: Fact, question: str, answer: str, src: Sources) -> list[str]:
    """Whether a question and its answer still ask and say ``fact`` (both grounded besides)."""
    allow = (fact.obj,) if fact.what == "no" else ()
    # question and answer may re-use the words of their templates ("树是" is jieba's cut of
    # 树 + 是什么颜色, "海是" of 海 + 是蓝色的)
    template = tuple(t.replace(fact.obj, "、") if fact.obj else t for t in (fact.question, turn_answer(fact)))
    problems = [f"问题：{p}" for p in grounding_problems(question, src, allow + template, question=True)]
    problems += [f"回答：{p}" for p in grounding_problems(answer, src, allow + template)]
    if not question.rstrip().endswith(("？", "?")) and fact.what != "describe":
        problems.append("问题要以“？”结尾")
    if fact.what != "describe" and not any(w in question for w in ASKS[fact.what]):
        problems.append(f"问题没有问原来的内容（{'/'.join(ASKS[fact.what])}）")
    both = question + answer
    if fact.obj and not says_zh(both, fact.obj):
        problems.append(f"没有提到{fact.obj}")
    if fact.what == "no" and names_object(src, fact.obj):
        problems.append(f"描述提到了{fact.obj}，不能回答“否”")
    if fact.what == "no" and not _NEGATION.search(answer):
        problems.append("回答应为否定（否）")
    if fact.what == "yes" and _NEGATION.search(answer):
        problems.append("回答应为肯定（是）")
    evidence = [src.zh[i] for i in fact.evidence]
    allowed = set().union(*(set().union(*chinese_numbers(z)[:2]) for z in evidence)) if evidence else set()
    if fact.what == "number" and int(fact.answer) not in chinese_numbers(answer)[0]:
        problems.append(f"回答的数量应为{fact.answer}")
    wrong = sorted(_numbers(both) - allowed)
    if wrong:
        problems.append(f"数量与描述不符：{'、'.join(map(str, wrong))}")
    if fact.what in ("colour", "shape"):
        need = {g for _, g in faithful.attributes_zh(fact.answer)}
        # every colour (shape) of the fact; and no other colour left untied or tied to its object
        other = {i for _, i, _, terms in colours.colour_objects(answer)
                 if not terms or fact.obj in terms} - need if fact.what == "colour" else set()
        if not need <= {g for _, g in faithful.attributes_zh(answer)} or other:
            problems.append(f"回答应为{fact.answer}")
    if fact.what == "position" and not ({g for _, g in faithful.attributes_zh(answer)} & set(POSITION_GROUPS)
                                        or "在" in answer):
        problems.append("回答没有说位置")
    if fact.what in ("describe", "position"):  # the caption itself, maybe re-worded: all of it kept
        lost = faithful.coverage_problems(answer, evidence)
        if lost:
            problems.append("回答漏掉了描述的内容：" + "、".join(w for _, what in lost for w in what))
    return problems
