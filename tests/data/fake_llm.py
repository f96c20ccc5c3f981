"""A stand-in for an OpenAI-compatible chat endpoint that misbehaves the way real LLMs do.

It is a real HTTP server on 127.0.0.1 (a thread with the standard library's http.server) that
answers ``POST /v1/chat/completions`` in OpenAI's format. It knows nothing of remoteglm: it imports
none of it and has its own small English -> Chinese word list, which on purpose renders some
remote-sensing terms differently from any particular project glossary (storage tank -> 储罐,
overpass -> 天桥 ...). Like an LLM reading its instructions, it follows ``english = 中文`` (or
``english -> 中文``) pairs it finds anywhere in the messages, and otherwise uses its own words.

What it does with a request depends only on the JSON it finds in the last user message:

* an object whose values are all strings (``{"1": "a runway", "2": ...}``) is translated item by
  item and answered as a JSON object with the same keys;
* an object or list holding a list of strings (``{"sentences": ["…。", "…。"]}``) is "rewritten"
  by joining those sentences into one paragraph;
* anything else gets "好的。".

Faults. Each has a rate (0..1, the chance per request it applies to; at most one fault per
request, so the rates that apply to one request must add up to at most 1) drawn from a seeded RNG,
and a count ("the next N requests it applies to", taken before any rate is drawn). A name can be
limited to one kind of request: ``counts={"rewrite:mood": 2}`` spares the translations.

===============  =====================  ==========================================================
name             applies to             what the reply is
===============  =====================  ==========================================================
refuse           any                    one of REFUSALS ("抱歉，这个我做不到。", "好的。" ...)
preamble         any                    "好的，以下是翻译：" + a ```json fenced block (translate);
                                        "好的，以下是合并后的描述：" + the paragraph (rewrite)
partial          translate              the JSON object cut off half way
renumber         translate              the same items numbered from 0
drop_key         translate              one key of the object missing
english          translate              one item keeps an English word
wrong_term       translate, with a      one item uses this server's own term (储罐, 天桥 ...)
                 term in ALT_TERMS      instead of the one the prompt asked for
mood             any                    invented mood words (宁静、美丽、生机勃勃 ...) added to one
                                        translation or to the paragraph
keep_one         rewrite, >= 2 sources  a paragraph that keeps only the first source
invent           translate, rewrite     one translation (or the paragraph) gains an object nobody
                                        mentioned ("，旁边还有一座教堂")
miscount         translate, rewrite,    one number in one translation (or the paragraph) is
                 with a number          changed (两 -> 三, 3 -> 4)
html             any                    HTTP 200, ``text/html``, an nginx "502 Bad Gateway" page
bad_body         any                    HTTP 200, ``application/json``, a body that is not JSON
empty            any                    a well-formed completion whose content is ""
slow             any                    the right answer after ``slow_seconds``
rate_limit       any                    HTTP 429, with the next header of ``retry_after``
server_error     any                    HTTP 500, with the next header of ``retry_after``
unauthorized     any                    HTTP 401 "Incorrect API key provided"
echo_auth        any                    HTTP 400 whose error message quotes the Authorization header
===============  =====================  ==========================================================

``retry_after`` is a sequence used in turn for 429 and 500 replies: ``None`` (no header), a string
(sent as ``Retry-After``, malformed ones included: "soon", "-5", a garbage date) or a dict of headers
(e.g. ``{"retry-after-ms": "10"}``).

Bookkeeping, independent of any prompt: ``requests`` (chat POSTs), ``by_kind``, ``sentence_requests``
(each translate item -> times asked), ``rewrite_requests`` (each tuple of sources -> times asked),
``log`` (one ``Call`` per request, with its headers), ``fault_log``, ``last_auth`` / ``auths``
(Authorization headers received), ``max_in_flight`` (most requests answered at once), ``valid``
(items answered correctly and unambiguously, and delivered: no fault touched them - so with
drop_key the items still in the reply count as valid, a translate preamble's fenced JSON counts,
partial or renumbered JSON does not, and a slow reply counts neither way, as the client may have
given up on it) and ``repeats`` (an item asked again after it had been answered validly;
``asked_after_valid()``: what a careful client never does, bar replies lost when it is killed).

Use::

    with FakeLLM(latency=0.05, rates=mixed_faults(0.2), seed=1) as srv:
        ... srv.base_url ...                       # http://127.0.0.1:<port>/v1
    FakeLLM(counts={"rate_limit": 1}, retry_after=["1"]).start()   # then .stop()

By hand: ``python tests/data/fake_llm.py --port 8000 --latency 0.05 --all 0.2 --rate refuse=0.1``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REFUSALS = ("抱歉，这个我做不到。", "好的。", "请稍等。", "当然可以！", "对不起，我不能帮助你。")
MOOD_PHRASES = ("，让人感觉十分宁静", "，景色非常美丽", "，到处生机勃勃", "，一派宁静祥和的气氛", "，环境优美宜人")
MOOD_WORDS = ("感觉", "宁静", "美丽", "景色", "生机", "勃勃", "祥和", "气氛", "优美", "宜人")  # each phrase has 2+
HTML_PAGE = (b"<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n"
             b"<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n")
GARBAGE_DATE = "Sun, 32 Foo 2024 25:61:61 GMT"
DEFAULT_RETRY_AFTER = (None, "1", "soon", "-5", GARBAGE_DATE)

TRANSLATE_ONLY = ("partial", "renumber", "drop_key", "english", "wrong_term")
REWRITE_ONLY = ("keep_one",)
# Content faults: wrong facts in an otherwise well-formed answer. Opt-in (not in REALISTIC), so
# runs that mix the realistic faults draw what they always drew.
CONTENT = ("invent", "miscount")
# (what is appended, the English words that would make it no invention)
INVENTED = (("，旁边还有一座教堂", ("church",)), ("，远处停着一架飞机", ("plane", "aircraft", "airport", "runway")),
            ("，附近有一个网球场", ("tennis",)), ("，中间有一艘船", ("boat", "ship", "harbor", "port", "dock")))
_NUMERAL = re.compile(r"\d+|[两二三四五六七八九]")
_NEXT = {"两": "三", "二": "三", "三": "四", "四": "五", "五": "六", "六": "七", "七": "八", "八": "九", "九": "十"}
ANY = ("refuse", "preamble", "mood", "html", "bad_body", "empty", "slow", "rate_limit", "server_error",
       "unauthorized", "echo_auth")
FAULTS = ANY + TRANSLATE_ONLY + REWRITE_ONLY + CONTENT
# What real endpoints do now and then; ``mixed_faults`` spreads a total rate over these.
REALISTIC = ("refuse", "preamble", "partial", "renumber", "drop_key", "english", "wrong_term", "mood", "keep_one",
             "html", "bad_body", "empty", "rate_limit", "server_error")

# Multi-word terms first. Where a remote-sensing term has several usual Chinese names this list
# takes its own pick; ALT_TERMS are the ones a "wrong_term" fault falls back to.
ALT_TERMS = {
    "storage tank": "储罐", "overpass": "天桥", "baseball diamond": "棒球内场", "intersection": "交叉口",
    "harbor": "海港", "freeway": "快速路", "chaparral": "丛林", "mobile home": "活动房屋",
    "mobile home park": "活动房屋营地", "golf course": "高尔夫场", "parking lot": "停车区", "viaduct": "高架路",
    "dense residential area": "密集居住区", "sparse residential area": "稀疏居住区", "runway": "飞行道",
    "tennis court": "网球区", "river": "江", "airplane": "客机", "beach": "沙滩", "farmland": "田地",
}
PHRASES = {
    **ALT_TERMS,
    "medium residential area": "中等密度居住区", "residential area": "居住区", "industrial area": "工厂区",
    "swimming pool": "泳池", "basketball court": "篮球场地", "parking space": "车位", "railway station": "车站",
    "t-junction": "丁字路口", "high way": "公路", "crossroad": "路口", "waste land": "荒地", "bare land": "空地",
    "a lot of": "许多", "lots of": "许多", "next to": "旁边", "close to": "靠近", "in front of": "前面",
    "there is": "有", "there are": "有", "on both sides of": "两边",
}
WORDS = {
    # function words
    "a": "一", "an": "一", "the": "", "of": "的", "with": "有", "and": "和", "or": "或", "is": "", "are": "",
    "there": "", "it": "它", "its": "它的", "this": "这", "these": "这些", "that": "那", "them": "它们",
    "in": "在", "on": "在", "at": "在", "to": "到", "into": "进入", "by": "被", "as": "如", "for": "为",
    "while": "同时", "which": "其", "has": "有", "have": "有", "but": "但", "so": "所以", "from": "从",
    "some": "一些", "many": "许多", "lots": "许多", "several": "几个", "few": "几个", "all": "全部",
    "each": "每个", "other": "其他", "others": "其他", "another": "另一", "both": "两", "only": "只",
    "no": "没有", "not": "不", "nothing": "无", "without": "没有", "very": "很", "quite": "相当",
    "here": "这里", "just": "刚好", "also": "也", "again": "又", "up": "上", "out": "出", "away": "远离",
    # numbers
    "one": "一", "two": "两", "three": "三", "four": "四", "five": "五", "six": "六", "seven": "七",
    "eight": "八", "nine": "九", "ten": "十", "number": "数量", "numbers": "数量",
    # places and objects
    "area": "区域", "areas": "区域", "part": "部分", "piece": "片", "pieces": "片", "plant": "植物",
    "plants": "植物", "house": "房子", "houses": "房子", "home": "住宅", "homes": "住宅", "villa": "别墅",
    "road": "路", "roads": "路", "street": "街道", "highway": "公路", "highways": "公路", "freeways": "快速路",
    "car": "车辆", "cars": "车辆", "building": "楼房", "buildings": "楼房", "tree": "树", "trees": "树木",
    "woods": "树林", "forest": "林地", "lawn": "草坪", "lawns": "草坪", "grass": "草", "grassland": "草原",
    "meadow": "牧场", "turf": "草皮", "turfs": "草皮", "bush": "灌丛", "bushes": "灌丛", "weeds": "杂草",
    "ground": "地面", "land": "土地", "sand": "沙子", "sands": "沙子", "water": "水", "waters": "水域",
    "sea": "海", "ocean": "大海", "wave": "浪花", "waves": "浪花", "foam": "泡沫", "foams": "泡沫",
    "bank": "岸", "banks": "岸", "boat": "小船", "boats": "小船", "ship": "轮船", "speedboat": "快艇",
    "speedboats": "快艇", "airport": "航空港", "plane": "飞机", "planes": "飞机", "fuselage": "机体",
    "luggage": "行李", "bunker": "沙坑", "bunkers": "沙坑", "roof": "房顶", "roofs": "房顶",
    "container": "货柜", "containers": "货柜", "warehouse": "库房", "warehouses": "库房",
    "bridge": "大桥", "railway": "铁道", "railways": "铁道", "trail": "小径", "trails": "小径",
    "path": "小路", "paths": "小路", "town": "城镇", "district": "街区", "desert": "荒漠", "pond": "水塘",
    "cropland": "庄稼地", "court": "球场", "courts": "球场", "pool": "水池", "pools": "水池",
    "park": "园区", "stadium": "运动场", "square": "广场", "lot": "块", "line": "线",
    "lines": "成行", "row": "排", "rows": "排", "mark": "标记", "marks": "标记", "marking": "标线",
    "arrow": "箭头", "arrows": "箭头", "corner": "角落", "corners": "角落", "side": "侧", "sides": "两侧",
    "middle": "中间", "shadow": "影子", "sky": "天空", "people": "行人", "pedestrians": "行人",
    "birds": "鸟", "algae": "藻类", "loess": "黄土", "spots": "斑点", "colors": "颜色", "colours": "颜色",
    "color": "颜色", "colour": "颜色", "size": "大小", "shape": "形状", "kinds": "种类", "kind": "种类",
    "positions": "位置", "direction": "方向", "directions": "方向", "distance": "远处", "spaces": "空位",
    "rectangles": "矩形", "backyards": "后院", "tributary": "支流", "tank": "罐", "tanks": "罐",
    # colours, shapes, states
    "white": "白色", "green": "绿色", "grey": "灰色", "gray": "灰色", "red": "红色", "blue": "蓝色",
    "dark": "深色", "black": "黑色", "brown": "棕色", "orange": "橙色", "purple": "紫色", "beige": "米色",
    "yellow": "黄色", "blue-green": "蓝绿色", "green-blue": "蓝绿色", "emerald": "翠绿", "turbid": "浑浊",
    "clear": "清", "small": "小", "big": "大", "large": "大", "huge": "巨大", "old": "旧", "new": "新",
    "deep": "深", "wide": "宽", "narrow": "窄", "long": "长", "short": "短", "high": "高", "low": "低",
    "empty": "空", "bare": "裸露", "dense": "密集", "densely": "密集地", "sparse": "稀疏", "medium": "中等",
    "residential": "居住", "industrial": "工业", "commercial": "商业", "crowded": "拥挤", "busy": "繁忙",
    "straight": "直", "curved": "弯", "curving": "弯曲", "round": "圆", "triangular": "三角形",
    "rectangular": "长方形", "pentagonal": "五边形", "hexagonal": "六边形", "regular": "规则",
    "different": "不同", "same": "相同", "mixed": "混合", "thick": "厚", "lush": "茂密", "verdant": "葱绿",
    "withered": "枯萎", "wilted": "枯萎", "abandoned": "废弃", "open": "开阔", "main": "主要", "upper": "上面",
    "lower": "下面", "left": "左边", "right": "右边", "parallel": "平行", "vertical": "垂直",
    "vertically": "垂直地", "diagonally": "斜着", "neatly": "整齐地", "compactly": "紧凑地",
    "haphazardly": "杂乱地", "irregularly": "不规则地", "separately": "分开", "together": "一起",
    "scattered": "散落", "scatteredly": "零散地", "dispersedly": "分散地", "distributed": "分布",
    "dotted": "点缀", "sparkling": "波光粼粼",
    # verbs and positions
    "go": "穿过", "goes": "穿过", "going": "穿过", "pass": "经过", "passes": "经过", "passed": "经过",
    "through": "穿过", "across": "横跨", "cross": "交叉", "crossed": "交叉", "crossing": "交叉",
    "intersected": "相交", "beside": "旁边", "near": "附近", "around": "周围", "surround": "环绕",
    "surrounded": "环绕", "between": "之间", "over": "上方", "under": "下方", "along": "沿着",
    "next": "旁边", "close": "靠近", "closed": "紧挨", "outside": "外面", "inside": "里面",
    "parked": "停着", "stopped": "停着", "docked": "停靠", "moored": "停泊", "taxiing": "滑行",
    "arranged": "排列", "arrange": "排列", "lined": "排成行", "located": "位于", "divided": "分隔",
    "separated": "隔开", "connected": "连接", "compose": "组成", "composed": "组成", "constitute": "构成",
    "made": "构成", "stands": "立着", "flows": "流过", "flying": "飞", "float": "漂浮", "beat": "拍打",
    "slapping": "拍打", "throw": "抛", "throwing": "抛", "pressed": "挤压", "covered": "覆盖",
    "turned": "转弯", "coming": "来", "come": "来", "merged": "汇合", "fanned": "扇形", "marked": "标出",
}

_TOKEN = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*|\d+(?:\.\d+)?|[^\sA-Za-z\d]")
_PAIR = re.compile(r"([A-Za-z][A-Za-z -]*?)\s*(?:=|->|→|:)\s*([\u4e00-\u9fff]+)")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def mixed_faults(total: float, names: tuple[str, ...] = REALISTIC) -> dict[str, float]:
    """``total`` spread evenly over ``names``; translate-only and rewrite-only faults share per kind.

    A translate request can draw refuse, preamble, mood, html, ... and the translate-only faults; a
    rewrite request the shared ones and keep_one. Each kind's rates add up to ``total``.
    """
    shared = [n for n in names if n in ANY]
    tr = [n for n in names if n in TRANSLATE_ONLY]
    rw = [n for n in names if n in REWRITE_ONLY]
    rates = {n: total / (len(shared) + len(tr)) for n in shared + tr}
    if rw:  # give rewrites the same total: their own faults take what translate-only ones take there
        rest = total - total * len(shared) / (len(shared) + len(tr))
        rates.update({n: rest / len(rw) for n in rw})
    return rates


def prompt_terms(messages: list[dict]) -> dict[str, str]:
    """``english = 中文`` / ``english -> 中文`` pairs anywhere in the messages (lower-cased English)."""
    terms = {}
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            for en, zh in _PAIR.findall(content):
                terms[re.sub(r"\s+", " ", en.strip().lower())] = zh
    return terms


def _forms(phrase: str) -> list[str]:
    """The phrase and its singular guesses (last word without s / es / ies)."""
    out = [phrase]
    if phrase.endswith("ies"):
        out.append(phrase[:-3] + "y")
    if phrase.endswith("es"):
        out.append(phrase[:-2])
    if phrase.endswith("s"):
        out.append(phrase[:-1])
    return out


def translate_pieces(english: str, terms: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(english piece, chinese piece) pairs: prompt terms, then this module's phrases and words.

    Unknown words are dropped (no English left); digits, punctuation and single capital letters
    (the T of a T-junction, an L shape) are kept.
    """
    terms = terms or {}
    tokens = _TOKEN.findall(english.strip().rstrip(". "))
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        for n in range(min(5, len(tokens) - i), 0, -1):
            zh = _lookup(" ".join(tokens[i : i + n]).lower(), terms, PHRASES, *((WORDS,) if n == 1 else ()))
            if zh is not None:
                tok = tokens[i]
                if n == 1 and len(tok) == 1 and tok.isupper() and i > 0:  # "an L shape": the letter stays
                    zh = tok
                out.append((" ".join(tokens[i : i + n]), zh))
                i += n
                break
        else:
            tok = tokens[i]
            if not re.match(r"[A-Za-z]", tok) or (len(tok) == 1 and tok.isupper()):
                out.append((tok, tok))
            i += 1
    return out


def _lookup(phrase: str, *tables: dict[str, str]) -> str | None:
    for table in tables:  # a term the prompt gives wins over this module's own words, in any form
        for form in _forms(phrase):
            if form in table:
                return table[form]
    return None


def _join_zh(pieces: list[tuple[str, str]]) -> str:
    text = "".join(zh for _, zh in pieces).strip(" ,.，")
    return (text or "图像") + "。"


def fake_translate(english: str, terms: dict[str, str] | None = None) -> str:
    """This server's faithful translation of one English sentence."""
    return _join_zh(translate_pieces(english, terms))


def fake_rewrite(sentences: list[str]) -> str:
    """The sources joined into one paragraph (repeats once), the server's faithful "rewrite"."""
    parts = [s.strip().rstrip("。.") for s in dict.fromkeys(sentences) if s.strip()]
    return "；".join(parts) + "。"


def _wrong_fact(text: str, fault: str, rng: random.Random, request: str = "") -> str:
    """``text`` with an invented object appended (invent: one the whole request never mentions,
    in Chinese or English, when there is one) or its first number changed (miscount)."""
    if fault == "miscount":
        m = _NUMERAL.search(text)
        new = str(int(m.group(0)) + 1) if m.group(0).isdigit() else _NEXT[m.group(0)]
        return text[: m.start()] + new + text[m.end() :]
    seen = (text + request).lower()
    fresh = [p for p, english in INVENTED if p[-1] not in seen and not any(e in seen for e in english)]
    return text.rstrip("。") + rng.choice(fresh or [p for p, _ in INVENTED]) + "。"


def find_payload(text: str):
    """The first JSON object or array in ``text``, or None."""
    dec = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            return dec.raw_decode(text, m.start())[0]
        except ValueError:
            continue
    return None


def classify(payload) -> tuple[str, list[str]]:
    """('translate', values) / ('rewrite', sources) / ('other', [])."""
    if isinstance(payload, dict) and payload and all(isinstance(v, str) for v in payload.values()):
        return "translate", list(payload.values())
    lists = [payload] if isinstance(payload, list) else list(payload.values()) if isinstance(payload, dict) else []
    for v in lists:
        if isinstance(v, list) and v and all(isinstance(s, str) for s in v):
            return "rewrite", v
    return "other", []


@dataclass
class Call:
    """One chat request as the server saw it."""

    n: int
    kind: str  # translate / rewrite / other / bad (unparseable body)
    items: list[str]
    fault: str | None = None
    status: int = 200
    auth: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # request headers, names lower-cased
    valid: list[str] = field(default_factory=list)  # items answered validly


class FakeLLM:
    """A fault-injecting OpenAI-compatible server; see the module docstring.

    ``rates`` {fault: 0..1}, ``counts`` {fault: n}, ``seed`` for the RNG, ``latency`` seconds per
    request, ``slow_seconds`` for the slow fault, ``retry_after`` the headers cycled through by 429/500,
    ``model`` the name reported back (default: the one asked for).
    """

    def __init__(self, rates: dict[str, float] | None = None, counts: dict[str, int] | None = None, seed: int = 0,
                 latency: float = 0.0, slow_seconds: float = 3.0, retry_after=DEFAULT_RETRY_AFTER,
                 model: str | None = None):
        for name in list(rates or {}) + list(counts or {}):
            only, _, fault = name.rpartition(":")
            if fault not in FAULTS or only not in ("", "translate", "rewrite"):
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}, each optionally "
                                 "limited to one kind of request as 'translate:NAME' or 'rewrite:NAME'")
        self.rates = dict(rates or {})
        self.counts = Counter(counts or {})
        self.rng = random.Random(seed)
        self.latency, self.slow_seconds, self.model = latency, slow_seconds, model
        self.retry_after = list(retry_after) if retry_after is not None else [None]
        self._ra_next = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Forget every count and record (faults and their RNG go on)."""
        with self.lock:
            self.requests = 0
            self.by_kind: Counter = Counter()
            self.sentence_requests: Counter = Counter()  # translate item -> times asked
            self.rewrite_requests: Counter = Counter()  # tuple of sources -> times asked
            self.valid: Counter = Counter()  # (kind, item) -> valid answers given
            self.repeats: list[tuple[str, str]] = []  # (kind, item) asked again after a valid answer
            self.log: list[Call] = []
            self.fault_log: list[str] = []
            self.auths: Counter = Counter()
            self.last_auth = ""
            self.max_in_flight = 0  # most requests being answered at once

    def asked_after_valid(self) -> Counter:
        """(kind, item) -> times it was asked after the server had already answered it validly."""
        with self.lock:
            return Counter(self.repeats)

    # -- choosing a fault --------------------------------------------------------------
    def _applies(self, name: str, kind: str, items: list[str]) -> bool:
        only, _, fault = name.rpartition(":")
        if only and only != kind:
            return False
        if fault in ANY:
            return True
        if fault in TRANSLATE_ONLY:
            if kind != "translate":
                return False
            if fault == "wrong_term":
                return any(self._alt_spans(s) for s in items)
            if fault == "english":
                return any(self._english_spans(s) for s in items)
            return True
        if fault in CONTENT:
            if kind not in ("translate", "rewrite"):
                return False
            return fault == "invent" or any(_NUMERAL.search(self._answer(kind, s)) for s in items)
        return kind == "rewrite" and len(set(items)) >= 2  # keep_one

    def _choose(self, kind: str, items: list[str]) -> str | None:
        with self.lock:
            for name, left in self.counts.items():
                if left > 0 and self._applies(name, kind, items):
                    self.counts[name] -= 1
                    return self._fired(name)
            u = self.rng.random()
            for name, rate in self.rates.items():
                if rate > 0 and self._applies(name, kind, items):
                    if u < rate:
                        return self._fired(name)
                    u -= rate
        return None

    def _fired(self, name: str) -> str:
        fault = name.rpartition(":")[2]
        self.fault_log.append(fault)
        return fault

    def _next_retry_after(self) -> dict[str, str]:
        with self.lock:
            choice = self.retry_after[self._ra_next % len(self.retry_after)]
            self._ra_next += 1
        if choice is None:
            return {}
        return dict(choice) if isinstance(choice, dict) else {"Retry-After": str(choice)}

    # -- answers -------------------------------------------------------------------------
    @staticmethod
    def _answer(kind: str, item: str) -> str:
        """What this server answers for one item of a request of that kind, faults aside."""
        return fake_translate(item) if kind == "translate" else item

    @staticmethod
    def _alt_spans(english: str) -> list[int]:
        low = english.lower()
        return [i for i, t in enumerate(ALT_TERMS) if re.search(rf"\b{re.escape(t)}(?:s|es)?\b", low)]

    @staticmethod
    def _english_spans(english: str) -> list[int]:
        return [i for i, (en, zh) in enumerate(translate_pieces(english)) if zh and len(en) >= 3 and en.isalpha()]

    def _translate(self, items: dict[str, str], terms: dict[str, str], fault: str | None,
                   request: str = "") -> tuple[str, list[str]]:
        """(content, keys answered validly)."""
        keys = list(items)
        out = {k: fake_translate(v, terms) for k, v in items.items()}
        valid = set(keys)
        with self.lock:
            rng = random.Random(self.rng.random())
        if fault in ("english", "wrong_term", "mood", "invent", "miscount"):
            eligible = [k for k in keys if fault in ("mood", "invent")
                        or (fault == "english" and self._english_spans(items[k]))
                        or (fault == "wrong_term" and self._alt_spans(items[k]))
                        or (fault == "miscount" and _NUMERAL.search(out[k]))]
            k = rng.choice(eligible)
            valid.discard(k)
            if fault == "english":
                pieces = translate_pieces(items[k], terms)
                spans = [i for i, (en, zh) in enumerate(pieces) if zh and len(en) >= 3 and en.isalpha()]
                i = rng.choice(spans) if spans else 0
                pieces[i] = (pieces[i][0], " " + pieces[i][0] + " ")
                out[k] = _join_zh(pieces)
            elif fault == "wrong_term":
                out[k] = fake_translate(items[k], {})  # this server's own names, not the prompt's
                if out[k] == fake_translate(items[k], terms):  # the prompt asked for these very names
                    valid.add(k)
            elif fault in CONTENT:
                out[k] = _wrong_fact(out[k], fault, rng, request)
            else:
                out[k] = out[k].rstrip("。") + rng.choice(MOOD_PHRASES) + "。"
        elif fault == "drop_key":
            k = rng.choice(keys)
            del out[k]
            valid.discard(k)
        content = json.dumps(out, ensure_ascii=False)
        if fault == "preamble":
            content = "好的，以下是翻译：\n```json\n" + json.dumps(out, ensure_ascii=False, indent=2) + "\n```"
        elif fault == "partial":
            content, valid = content[: max(1, len(content) // 2)], set()
        elif fault == "renumber":
            content = json.dumps({str(i): out[k] for i, k in enumerate(keys)}, ensure_ascii=False)
            valid = set()
        return content, [items[k] for k in keys if k in valid]

    def _rewrite(self, sources: list[str], fault: str | None, request: str = "") -> tuple[str, bool]:
        """(content, valid)."""
        para = fake_rewrite(sources)
        if fault == "mood":
            with self.lock:
                phrase = self.rng.choice(MOOD_PHRASES)
            return para.rstrip("。") + phrase + "。", False
        if fault in CONTENT:
            with self.lock:
                rng = random.Random(self.rng.random())
            return _wrong_fact(para, fault, rng, request), False
        if fault == "keep_one":
            return fake_rewrite(sources[:1]), False
        if fault == "preamble":
            return "好的，以下是合并后的描述：\n\n" + para, False
        return para, True

    def _completion(self, body: dict, content: str, prompt_chars: int) -> bytes:
        reply = {
            "id": f"chatcmpl-fake-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model or body.get("model") or "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_chars // 3, "completion_tokens": len(content),
                      "total_tokens": prompt_chars // 3 + len(content)},
        }
        return json.dumps(reply, ensure_ascii=False).encode()

    def handle(self, raw: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes, Call]:
        """(status, headers, body, record) for one POST to /v1/chat/completions."""
        headers = {k.lower(): v for k, v in headers.items()}
        auth = headers.get("authorization", "")
        try:
            body = json.loads(raw)
            messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        except (ValueError, AttributeError):
            body, messages = None, []
        user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
        payload = find_payload(user) if isinstance(user, str) else None
        kind, items = classify(payload) if body is not None else ("bad", [])
        with self.lock:
            self.requests += 1
            call = Call(n=self.requests, kind=kind, items=list(items), auth=auth, headers=headers)
            self.log.append(call)
            self.by_kind[kind] += 1
            self.auths[auth] += 1
            self.last_auth = auth
            if kind == "translate":
                self.sentence_requests.update(items)
            elif kind == "rewrite":
                self.rewrite_requests[tuple(items)] += 1
            keys = [(kind, s) for s in items] if kind == "translate" else [(kind, "\n".join(items))]
            self.repeats.extend(k for k in keys if self.valid[k] > 0)
        if body is None or not messages:
            call.status = 400
            return 400, {}, b'{"error": {"message": "could not parse the JSON body", "type": "invalid_request_error"}}', call
        if self.latency:
            time.sleep(self.latency)
        fault = call.fault = self._choose(kind, items)
        err = None
        if fault == "rate_limit":
            err = 429, self._next_retry_after(), {"message": "Rate limit reached, please try again later",
                                                  "type": "rate_limit_exceeded"}
        elif fault == "server_error":
            err = 500, self._next_retry_after(), {"message": "The server had an error while processing your request",
                                                  "type": "server_error"}
        elif fault == "unauthorized":
            err = 401, {}, {"message": "Incorrect API key provided", "type": "invalid_request_error"}
        elif fault == "echo_auth":
            err = 400, {}, {"message": f"Invalid header 'Authorization: {auth}' for model {body.get('model')!r}",
                            "type": "invalid_request_error"}
        if err:
            call.status = err[0]
            return err[0], err[1], json.dumps({"error": err[2]}).encode(), call
        if fault == "html":
            return 200, {"Content-Type": "text/html"}, HTML_PAGE, call
        if fault == "bad_body":
            return 200, {}, b'{"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"ind', call
        if fault == "slow":
            time.sleep(self.slow_seconds)
        prompt_chars = sum(len(m.get("content") or "") for m in messages if isinstance(m.get("content"), str))
        valid: list[str] = []
        if fault == "refuse":
            with self.lock:
                content = self.rng.choice(REFUSALS)
        elif fault == "empty":
            content = ""
        elif kind == "translate":
            content, valid = self._translate(dict(payload), prompt_terms(messages), fault, user)
        elif kind == "rewrite":
            content, ok = self._rewrite(items, fault, user)
            valid = ["\n".join(items)] if ok else []
        else:
            content = "好的。"
        if fault != "slow":  # a slow reply may reach a client that gave up: not counted either way
            call.valid = valid
            with self.lock:
                for v in valid:
                    self.valid[(kind, v)] += 1
        return 200, {}, self._completion(body, content, prompt_chars), call

    # -- server ------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers
            disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, headers: dict[str, str], data: bytes) -> bool:
                try:
                    self.send_response(status)
                    if not any(k.lower() == "content-type" for k in headers):
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    return True
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    return False

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {}, json.dumps({"object": "list", "data": [
                        {"id": fake.model or "fake", "object": "model", "owned_by": "fake"}]}).encode())
                else:
                    self._send(404, {}, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {}, b'{"error": {"message": "Not found", "type": "invalid_request_error"}}')
                    return
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    status, headers, data, call = fake.handle(raw, dict(self.headers.items()))
                    if not self._send(status, headers, data) and call.valid:
                        with fake.lock:  # never delivered: not a valid answer after all
                            for v in call.valid:
                                fake.valid[(call.kind, v)] -= 1
                            call.valid = []
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.base_url

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> "FakeLLM":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _rate(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    return name, float(value)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--all", type=float, default=0.0, help="spread this total fault rate over the realistic faults")
    ap.add_argument("--rate", type=_rate, action="append", default=[], metavar="FAULT=RATE",
                    help=f"one fault's rate, repeatable; faults: {', '.join(FAULTS)}")
    ap.add_argument("--slow-seconds", type=float, default=3.0)
    ap.add_argument("--retry-after", default=None,
                    help="comma-separated Retry-After values for 429/500, 'none' for no header (default: a mix)")
    args = ap.parse_args()
    rates = {**(mixed_faults(args.all) if args.all else {}), **dict(args.rate)}
    ra = DEFAULT_RETRY_AFTER if args.retry_after is None else [
        None if v.strip().lower() == "none" else v for v in args.retry_after.split(",")]
    try:
        llm = FakeLLM(rates=rates, seed=args.seed, latency=args.latency, slow_seconds=args.slow_seconds, retry_after=ra)
    except ValueError as e:
        ap.error(str(e))
    print(llm.start(args.port), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        llm.stop()
