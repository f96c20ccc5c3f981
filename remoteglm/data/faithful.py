"""Faithfulness checks shared by the ``translate`` and ``rewrite`` steps, each defined once.

Real LLMs answer with refusals ("抱歉，这个我做不到。"), filler ("好的。", "请稍等。"), preambles
("以下是翻译："), questions back to the user, mood words the English never says (宁静祥和) and
paragraphs that keep one of three source sentences. These functions find each of those; they
return what they found (words, numbers, sentence numbers) and the two steps turn that into a
problem message in the language of their prompt.

- ``meta_text``: refusals, apologies, acknowledgements, AI self-talk, questions, quotes of the
  instructions - allowed only where the source itself says the same thing.
- ``invented_mood``: mood / judgement words (``BANNED``); in a translation each is allowed only
  when the English has one of its cue words (quiet -> 宁静, beautiful -> 美丽 ...), in a rewrite
  only when a (checked) source sentence has the word.
- ``invented_objects``: distinctive objects (教堂, 飞机, 船 ...) a translation names but its English
  does not mention.
- ``number_problems``: definite numbers ("三" and "3" are the same number, "两"/"双" are 2) that
  differ between an English sentence and its translation.
- ``coverage_problems``: what each source sentence of a rewrite says (nouns, numbers, glossary
  terms) that the paragraph lost; ``invented_nouns`` and ``invented_numbers`` the other way.
- ``invented_attributes``: colour, shape and position words (``ATTRIBUTES``) no source says, in
  Chinese or in English (the grounding check of the instruction data, ``grounding.py``).
- ``length_problem``: a paragraph much shorter than the distinct content of its sources, or much
  longer than all of them together; ``translation_length_problem`` for one sentence.

``validator_version()`` is a digest of this code and the glossary: cached answers stamped with
another digest are checked again when they are read (see ``ResultCache.get_checked``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import unicodedata

from . import glossary
from .glossary import ACCEPTED, GLOSSARY, jieba_with_terms, zh_words

# -- mood and judgement words ----------------------------------------------------------------
# Each banned word -> the English stems that say the same thing. A translation may use the word
# only if its English has one of the stems (matched at a word start: "beautiful" also matches
# "beautifully"); a rewrite only if one of its source sentences has the word itself.
_BEAUTY = ("beaut", "pretty", "lovely", "nice", "gorgeous", "attractive", "fine-looking")
_QUIET = ("quiet", "calm", "peaceful", "tranquil", "serene", "still", "silent")
_BUSY = ("busy", "bustling", "prosperous", "crowded", "lively", "thriving", "flourishing", "heavy traffic")
_GRAND = ("magnificent", "spectacular", "grand", "majestic", "splendid", "impressive", "stunning", "imposing")
_LIFE = ("vibrant", "vigorous", "vital", "lively", "full of life", "thriving", "flourishing")
_VIEW = ("scener", "scenic", "landscape", "view", "scene", "vista", "picturesque")
_SEEM = ("seem", "appear", "look like", "looks like", "looking like", "as if", "as though", "like", "resembl")
_COSY = ("comfortable", "cosy", "cozy", "pleasant", "snug", "relax", "leisure", "warm", "agreeable")
MOOD_CUES: dict[str, tuple[str, ...]] = {
    "感觉": ("feel", "sense", "impression"), "感受": ("feel", "sense", "experience"),
    "生机": _LIFE, "勃勃": _LIFE, "盎然": _LIFE, "活力": _LIFE + ("energ", "dynamic"),
    "美丽": _BEAUTY, "漂亮": _BEAUTY, "优美": _BEAUTY + ("elegant", "graceful"), "秀丽": _BEAUTY,
    "美好": _BEAUTY + ("good",), "美景": _BEAUTY + _VIEW, "美不胜收": _BEAUTY,
    "宁静": _QUIET, "安详": _QUIET, "静谧": _QUIET, "祥和": _QUIET + ("harmon",),
    "氛围": ("atmospher", "ambien", "mood", "feel"), "气氛": ("atmospher", "ambien", "mood"), "气息": ("atmospher", "air of", "breath", "smell", "scent"),
    "和谐": ("harmon",), "壮观": _GRAND, "壮丽": _GRAND, "宏伟": _GRAND, "迷人": ("charm", "attractive", "fascinat",
                                                                             "enchant", "captivat"),
    "繁华": _BUSY, "热闹": _BUSY, "繁忙": _BUSY,
    "宜人": _COSY, "惬意": _COSY, "舒适": _COSY, "悠闲": _COSY, "温馨": _COSY,
    "景色": _VIEW + _BEAUTY, "风景": _VIEW, "如画": ("picturesque", "like a painting", "painting"),
    "令人": ("impressive", "amazing", "astonish", "strik", "stunning", "eye-catching", "breathtaking", "remarkabl"),
    "让人": ("impressive", "amazing", "astonish", "strik", "stunning", "eye-catching", "breathtaking", "makes",
             "make people", "let"),
    "仿佛": _SEEM, "似乎": _SEEM, "好像": _SEEM,
    "充满": ("full", "fill", "replete", "brim"), "展现": ("show", "display", "present", "exhibit", "reveal",
                                                        "demonstrat"),
    "彰显": ("show", "display", "highlight", "manifest"), "映衬": ("contrast", "set off", "backdrop", "against"),
    "点缀": ("dot", "sprinkl", "stud", "decorat", "embellish", "interspers", "adorn"),
    "生动": ("vivid", "lively"), "梦幻": ("dream", "fantas", "magic", "fairy"), "诗意": ("poet",),
    "清新": ("fresh", "refresh"), "心旷神怡": ("refresh", "pleasant", "relax"), "赏心悦目": _BEAUTY + ("pleasing",),
}
BANNED: tuple[str, ...] = tuple(MOOD_CUES)

# -- distinctive objects a translation may name only when its English mentions them ------------
# Chinese -> English stems. Generic words (道路, 建筑, 树, 房屋, 水 ...) have too many English
# ways to be said to be checked this way; these have few.
OBJECT_CUES: dict[str, tuple[str, ...]] = {
    "飞机": ("airplane", "aeroplane", "plane", "aircraft", "jet", "airliner", "airport", "airfield"),
    "机场": ("airport", "airfield", "aerodrome", "airstrip"),
    "教堂": ("church", "cathedral", "chapel", "basilica"),
    "储油罐": ("tank",), "油罐": ("tank", "oil"),
    "网球场": ("tennis",), "篮球场": ("basketball",), "棒球场": ("baseball",), "足球场": ("football", "soccer"),
    "高尔夫": ("golf",), "游泳池": ("pool", "swim"), "体育场": ("stadium", "arena", "sport"),
    "操场": ("playground", "track", "sports ground", "sports field", "field"),
    "学校": ("school", "campus", "college", "universit"), "火车站": ("station", "railway", "railroad", "train"),
    "火车": ("train", "railway", "railroad", "locomotive"), "铁路": ("railway", "railroad", "rail", "train", "track"),
    "港口": ("harbo", "port", "marina"), "码头": ("pier", "wharf", "dock", "quay", "jetty", "berth", "harbo", "port"),
    "船": ("boat", "ship", "vessel", "yacht", "ferr", "sail", "canoe", "kayak", "cruise", "barge", "dock", "marina",
          "speedboat", "harbo", "port"),
    "卡车": ("truck", "lorr"), "公交": ("bus",), "巴士": ("bus",),
    "沙漠": ("desert",), "森林": ("forest", "wood", "jungle", "grove", "tree"),
    "海滩": ("beach", "sand", "shore", "coast", "seaside"), "沙滩": ("beach", "sand", "shore", "coast", "seaside"),
    "海洋": ("ocean", "sea", "marine"), "湖": ("lake",), "池塘": ("pond", "pool", "pit", "lake", "reservoir"),
    "河": ("river", "stream", "creek", "canal", "channel", "waterway", "brook", "bank"),
    "山": ("mountain", "hill", "mount", "peak", "ridge", "slope", "cliff", "rock", "volcan"),
    "停车场": ("parking", "car park"), "集装箱": ("container",), "仓库": ("warehouse", "depot", "storehouse",
                                                                          "storage"),
    "工厂": ("factor", "plant", "industr", "mill", "works"), "广场": ("square", "plaza"), "公园": ("park",),
    "花园": ("garden",), "温室": ("greenhouse",), "墓": ("cemeter", "grave", "tomb"),
    "风车": ("windmill", "wind turbine", "turbine"), "太阳能": ("solar",), "农田": ("farm", "field", "crop", "agricultur",
                                                                                  "cultivat", "paddy", "arable"),
}

# Nouns any faithful paragraph may use without a source saying them.
GENERIC_NOUNS = {
    "图像", "图片", "画面", "场景", "影像", "照片", "遥感", "区域", "地区", "部分", "地方", "位置",
    "周围", "旁边", "附近", "中间", "中心", "一侧", "两侧", "两边", "左侧", "右侧", "上方", "下方",
    "整体", "其中", "一些", "许多", "很多", "数量", "形状", "颜色", "方向", "这里", "那里",
}

# -- refusals, filler and talk about the task ---------------------------------------------------
# (name, Chinese pattern, English stems that make it a faithful rendering, or () for never).
_ACK = r"好的|好|当然|当然可以|没问题|可以的|行|收到|明白了?|了解了?|嗯|是的|OK|Ok|ok|Okay|Sure|sure"
META: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("apology", r"抱歉|对不起|很遗憾|非常遗憾|不好意思|[Ss]orry", ()),
    ("refusal", (r"我(?:无法|不能|没办法|没法|做不到|不会|不可以)|(?:无法|不能|没法|没办法|不便)(?:帮|协助|完成|提供|满足|"
                 r"回答|处理|翻译|合并|执行|为您|为你|给您|给你)|做不到|办不到|无能为力|爱莫能助"), ()),
    ("AI talk", r"作为(?:一[个名款位])?(?:AI|人工智能|语言模型|助手|机器人)|AI助手|语言模型|人工智能助手|[Aa]s an AI", ()),
    ("acknowledgement", rf"(?:^|[。！!\n])\s*(?:{_ACK})\s*(?:[，,。！!：:～~…]|$)", ()),
    ("filler", r"当然可以|没问题|请稍等|稍等|稍候|马上为|这就为|很高兴|乐意为|愿意为|为您|为你", ()),
    ("preamble", r"以下是|如下[：:]|如下所示|下面是|翻译结果|结果如下", ()),
    ("talk to the user", (r"希望(?:这|以上|对您|对你|能帮)|如果(?:您|你)|还有(?:什么|其他)(?:问题|需要)|需要我|请问|"
                          r"请(?:提供|告诉|确认|说明|发送|稍)"), ()),
    # a question mark or 吗 is talk to the user, unless the English is itself a question (RSVQA)
    ("question", r"[?？]|吗\s*[。！!]?\s*$", ("?",)),
    ("numbering or markup", r"(?:^|\n)\s*(?:\d+|[一二三四五六七八九十]+)[.、．)）](?!\d)|\*\*|```|(?:^|\n)\s*(?:#+|[-*•])\s", ()),
    ("quote of the instructions", r"翻译|译文|原文|原句|句子|段落|合并|编号|要求|输出|描述[：:]|JSON|json|同上|见上",
     ("translat", "sentence", "paragraph", "json", "number", "require", "output", "merg", "combin", "original")),
    ("second person", r"您|你", ("you$", "your$")),
    ("first person", r"我", ("we$", "us$", "our$", "i$", "me$", "my$")),
)
_META_RE = tuple((name, re.compile(pat), cues) for name, pat, cues in META)

# -- numbers ---------------------------------------------------------------------------------
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
# Words holding numeral characters that are not counts (十字路口 is an intersection, 四周 "all round").
_NOT_COUNTS = re.compile(
    r"十字|十分|十足|三角|四周|四面|四方|四处|五颜六色|五彩|七彩|三三两两|千姿百态|万物|百货|百分之|千万|万一|一一|"
    r"一望无际|七零八落|乱七八糟|千篇一律|四通八达|八方|千家万户|成千上万|成百上千|万千|三维|二维"
)
_CN_NUM = re.compile(r"[零〇一二两俩三四五六七八九十百千万]+")
_APPROX_BEFORE = "几数上近约成好"
_APPROX_AFTER = "几多余来"
_LOCATION_TWO = re.compile(r"两(?=[侧边岸旁端头面])")  # 两侧 "both sides": a place, not a count
# "several": 几条, 数栋, 若干, 多个 (not 几乎 "almost", 几何, nor 许多排列 "many ... arranged")
_SEVERAL = re.compile(r"几(?![乎何])|数[条棵个辆架座栋艘片块处排根只]|若干|(?<![许很众诸较更太好最])多[条棵个辆架座栋艘片块处根只]")
_EN_UNITS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"))}
_EN_TENS = {w: 10 * (i + 2) for i, w in enumerate(
    ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"))}
_EN_SOFT = {  # words that allow a Chinese number without making it required
    "both": 2, "pair": 2, "pairs": 2, "couple": 2, "double": 2, "twin": 2, "dual": 2, "either": 2, "second": 2,
    "twice": 2, "third": 3, "triple": 3, "fourth": 4, "fifth": 5, "sixth": 6, "dozen": 12, "dozens": 12,
}

_CJK = re.compile(r"[\u4e00-\u9fff]")
_EN_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


@functools.cache
def _cue(stems: tuple[str, ...]) -> re.Pattern:
    """One regex for English stems: each matches at a word start ("beaut" -> "beautiful"); a stem
    ending in "$" is a whole word ("we$" is not the start of "well"); a stem that is not a word
    ("?") matches anywhere ("road?")."""
    alts = []
    for s in sorted(stems, key=len, reverse=True):
        whole, word = s.endswith("$"), s[:1].isalpha()
        s = re.escape(s.rstrip("$")).replace(r"\ ", r"\s+")
        alts.append(("(?<![a-z])" if word else "") + (rf"{s}(?![a-z])" if whole else s))
    return re.compile(f"(?:{'|'.join(alts)})", re.IGNORECASE)


@functools.lru_cache(maxsize=1 << 18)  # the instruction checks ask the same captions about every object
def _english_says(english: str, stems: tuple[str, ...]) -> bool:
    return bool(stems) and bool(_cue(stems).search(english))


# -- meta text -------------------------------------------------------------------------------

def meta_text(text: str, sources: list[str] = (), english: str | None = None) -> list[tuple[str, str]]:
    """(kind, phrase) for each refusal / chatter / instruction phrase in ``text`` (a reply).

    A phrase is allowed when a Chinese source sentence has the same kind of phrase (a rewrite of
    a caption that itself says 我们), or when ``english`` has the cue that a faithful translation
    renders that way ("you can see" -> 你可以看到).
    """
    found = []
    for name, rx, cues in _META_RE:
        m = rx.search(text)
        if not m or any(rx.search(s) for s in sources):
            continue
        if english is not None and _english_says(english, cues):
            continue
        found.append((name, m.group(0).strip(" \n。！!，,：:") or m.group(0)))
    # one phrase once: "我" is not reported again beside "我做不到", nor "请稍" beside "请稍等"
    return [(n, p) for i, (n, p) in enumerate(found)
            if not any(p in q and (p != q or j < i) for j, (_, q) in enumerate(found) if j != i)]


# -- invented content ------------------------------------------------------------------------

def invented_mood(text: str, sources: list[str] = (), english: str | None = None) -> list[str]:
    """Banned mood / judgement words in ``text`` that neither the sources nor the English say."""
    src = "".join(sources)
    out = []
    for word, cues in MOOD_CUES.items():
        if word not in text or word in src:
            continue
        if english is not None and _english_says(english, cues):
            continue
        out.append(word)
    return out


def invented_objects(chinese: str, english: str) -> list[str]:
    """Distinctive objects a translation names that its English does not mention."""
    out = []
    for zh, cues in OBJECT_CUES.items():
        if zh in chinese and not _english_says(english, cues):
            if any(zh in o and o in chinese for o in out):  # 储油罐 already reported, not 油罐 again
                continue
            out.append(zh)
    return out


@functools.lru_cache(maxsize=65536)
def _nouns(sentence: str) -> tuple[str, ...]:
    """Nouns of a Chinese sentence (jieba + glossary terms), generic ones left out."""
    jieba_with_terms()
    import jieba.posseg as pseg

    return tuple(dict.fromkeys(w for w, flag in pseg.cut(sentence)
                               if flag.startswith("n") and w not in GENERIC_NOUNS and _CJK.search(w)))


def invented_nouns(paragraph: str, sources: list[str], skip: list[str] = ()) -> list[str]:
    """Nouns of a paragraph that no source sentence has (re-segmentations of source text allowed)."""
    src = "".join(sources)
    chars = set(src)
    forms = _term_forms()
    variants = {f for s in sources for t in zh_terms(s) for f in forms[t]}  # 居民区 for 住宅区
    out = []
    for word in _nouns(paragraph):
        if word in src or word in variants or any(word in s for s in skip):
            continue
        # A noun whose every character appears in the sources is a re-segmentation, not new content.
        if len(word) > 1 and all(c in chars for c in word):
            continue
        out.append(word)
    return out


# -- numbers ---------------------------------------------------------------------------------

def _cn_value(run: str) -> int | None:
    """The value of a run of Chinese numerals (三, 十二, 二十五, 两百); None for digit lists (两三)."""
    if not any(c in _CN_UNITS for c in run):
        return _CN_DIGITS[run] if len(run) == 1 else None
    total, section, digit = 0, 0, None
    for c in run:
        if c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
        else:
            unit = _CN_UNITS[c]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section, digit = 0, None
            else:
                section += (1 if digit is None else digit) * unit
                digit = None
    return total + section + (digit or 0)


@functools.lru_cache(maxsize=65536)  # sources are counted again for every answer checked against them
def chinese_numbers(text: str, places: bool = True) -> tuple[frozenset[int], frozenset[int], bool]:
    """(definite numbers, approximate numbers, says "several") in Chinese text; 1 is left out.

    "三" and "3" are both 3; "两"/"俩"/"双" are 2; "十几"/"几十"/"数百" are approximate; idioms that
    hold numerals (十字路口, 四周, 五颜六色) are not numbers. ``places=False`` also leaves out 两 of
    place words (两侧, 两岸), which render "both sides" as often as "two sides".
    """
    text = _NOT_COUNTS.sub("、", _nfkc(text))
    if not places:
        text = _LOCATION_TWO.sub("、", text)
    exact: set[int] = set()
    approx: set[int] = set()
    for m in re.finditer(r"\d+(?:\.\d+)?", text):
        if "." not in m.group(0):
            exact.add(int(m.group(0)))
    for m in _CN_NUM.finditer(text):
        run, before, after = m.group(0), text[m.start() - 1 : m.start()], text[m.end() : m.end() + 1]
        values = [_cn_value(run)] if _cn_value(run) is not None else [_CN_DIGITS.get(c, 0) for c in run]
        into = approx if (before and before in _APPROX_BEFORE) or (after and after in _APPROX_AFTER) else exact
        if len(values) > 1 or run in ("百", "千", "万"):  # 两三棵 "two or three"; 百米, 千米 are units
            into = approx
        into.update(v for v in values if v and v > 1)
    if "双" in text:
        exact.add(2)
    several = bool(_SEVERAL.search(text))
    return frozenset(exact - {0, 1}), frozenset(approx - {0, 1}), several


def english_numbers(english: str) -> tuple[set[int], set[int]]:
    """(numbers a translation must keep, numbers it may use) in an English sentence; 1 left out.

    "two", "2", "twenty-two", "twenty two", "three hundred" must be kept; "both", "a pair",
    "dozens", "hundreds of", "second" allow a number without requiring one.
    """
    text = english.lower()
    required = {int(m.group(0)) for m in re.finditer(r"(?<![\d.])\d+(?![\d.])", text)}
    soft: set[int] = set()
    words = [p for w in _EN_WORD.findall(text) for p in w.split("-")]
    i = 0
    while i < len(words):
        w, value = words[i], None
        if w in _EN_TENS:
            value = _EN_TENS[w]
            if i + 1 < len(words) and 0 < _EN_UNITS.get(words[i + 1], 0) < 10:
                value += _EN_UNITS[words[i + 1]]
                i += 1
        elif w in _EN_UNITS:
            value = _EN_UNITS[w]
        if value is not None:
            if words[i + 1 : i + 2] == ["hundred"]:
                value, i = value * 100, i + 1
            required.add(value)
        elif w in _EN_SOFT:
            soft.add(_EN_SOFT[w])
        elif w in ("hundred", "hundreds", "thousand", "thousands"):
            soft.add(100 if w.startswith("h") else 1000)
        i += 1
    return required - {0, 1}, (soft | required) - {0, 1}


def number_problems(english: str, chinese: str) -> tuple[list[int], list[int]]:
    """(numbers of the English missing from the translation, numbers the translation invents)."""
    required, allowed = english_numbers(english)
    exact, approx, _ = chinese_numbers(chinese)
    missing = sorted(n for n in required if n not in exact | approx)
    strict, _, _ = chinese_numbers(chinese, places=False)
    invented = sorted(n for n in strict if n not in allowed)
    return missing, invented


# -- rewrite coverage ------------------------------------------------------------------------

# Chinese forms that count as the same glossary term in a paragraph (besides ACCEPTED's forms).
_ZH_VARIANTS = (
    ("建筑", "建筑物"), ("草地", "草坪", "草皮"), ("灌木", "灌木丛"), ("桥梁", "桥"), ("河流", "河"),
    ("山地", "山"), ("房屋", "房子", "住房"), ("汽车", "车辆", "车"), ("十字路口", "路口"), ("池塘", "水塘"),
    ("住宅区", "居民区", "居住区"), ("海洋", "海"), ("农田", "田地"),
)


@functools.lru_cache(maxsize=1)
def _term_forms() -> dict[str, frozenset[str]]:
    # every glossary term, the one-character ones too (jieba may tag 树 a verb, but it is a term)
    forms: dict[str, set[str]] = {t: {t} for t in set(zh_words()) | set(GLOSSARY.values())}
    for en, zh in GLOSSARY.items():
        if zh in forms:
            forms[zh].update(ACCEPTED.get(en, ()))
    for group in [tuple(g) for g in ACCEPTED.values()] + list(_ZH_VARIANTS):
        for t in group:
            if t in forms:
                forms[t].update(group)
    return {t: frozenset(f) for t, f in forms.items()}


@functools.lru_cache(maxsize=65536)  # sources are checked against many answers
def zh_terms(sentence: str) -> tuple[str, ...]:
    """Glossary terms in a Chinese sentence, longest first and not overlapping (密集住宅区, not 住宅)."""
    terms = sorted(_term_forms(), key=len, reverse=True)
    return tuple(dict.fromkeys(t for _, _, t in spans(sentence, [(t, t) for t in terms])))


def spans(text: str, words) -> list[tuple[int, int, object]]:
    """(start, end, value) for each (word, value) of ``words`` in ``text``, taken in the order of
    ``words`` (longest first, by the callers) where they overlap nothing taken before."""
    found, taken = [], [False] * len(text)
    for word, value in words:
        start = text.find(word)
        while start >= 0:
            end = start + len(word)
            if not any(taken[start:end]):
                found.append((start, end, value))
                taken[start:end] = [True] * len(word)
            start = text.find(word, start + 1)
    return found


def _noun_kept(noun: str, paragraph: str, chars: set[str]) -> bool:
    """A source noun is kept if the paragraph has it, or half its characters (树木 -> 树, 房屋 -> 房子)."""
    if noun in paragraph:
        return True
    return sum(c in chars for c in noun) * 2 >= len(noun) and len(noun) > 1


def coverage_problems(paragraph: str, sources: list[str]) -> list[tuple[int, list[str]]]:
    """(1-based source number, what of it the paragraph lost) for each source that lost too much.

    Every glossary term and every number of a source must be in the paragraph (its trivial forms
    count: 路 for 道路, 3 for 三); a third of its nouns (terms included) may go, if not terms: a
    re-wording, or a repeat said once in other words.
    """
    chars = set(paragraph)
    p_exact, p_approx, p_several = chinese_numbers(paragraph)
    forms = _term_forms()
    out = []
    for i, src in enumerate(sources, 1):
        lost: list[str] = []
        terms = zh_terms(src)
        for t in terms:
            if not any(f in paragraph for f in forms[t]):
                lost.append(t)
        exact, approx, several = chinese_numbers(src)
        lost += [_show_number(n) for n in sorted(exact | approx) if n not in p_exact | p_approx]
        if several and not (p_several or p_exact or p_approx):
            lost.append("几")
        nouns = [n for n in _nouns(src) if not any(n in t or t in n for t in terms)]
        gone = [n for n in nouns if not _noun_kept(n, paragraph, chars)]
        if lost or len(gone) > (len(nouns) + len(terms)) // 3:
            lost += gone
        if lost:
            out.append((i, lost))
    return out


def _show_number(n: int) -> str:
    return {2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九", 10: "十"}.get(n, str(n))


def invented_numbers(paragraph: str, sources: list[str]) -> list[int]:
    """Definite numbers of a paragraph that no source sentence has."""
    have: set[int] = set()
    for s in sources:
        exact, approx, _ = chinese_numbers(s)
        have |= exact | approx
    exact, _, _ = chinese_numbers(paragraph, places=False)
    return sorted(n for n in exact if n not in have)


# -- attributes: colour, shape, position -------------------------------------------------------
# (kind, Chinese forms, English stems). Text that uses a form says that attribute; a source says
# it when a Chinese source has one of the forms or its English one of the stems. Forms are matched
# longest first without overlap (长方形 is a rectangle, not also a 方形). Only words with a clear
# English are listed: a bare 直 is also 垂直 / 直升机, a bare 上 is everywhere.
ATTRIBUTES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("colour", ("白色", "白"), ("white",)), ("colour", ("灰色", "灰"), ("grey", "gray")),
    ("colour", ("绿色", "绿"), ("green", "emerald", "verdant")), ("colour", ("红色", "红"), ("red$", "reddish")),
    ("colour", ("蓝色", "蓝"), ("blue", "azure")), ("colour", ("黑色", "黑"), ("black",)),
    ("colour", ("棕色", "褐色", "棕", "褐"), ("brown",)), ("colour", ("橙色", "橘色", "橙", "橘"), ("orange",)),
    ("colour", ("黄色", "黄"), ("yellow", "golden", "loess")), ("colour", ("紫色", "紫"), ("purple", "violet")),
    ("colour", ("米色",), ("beige",)), ("colour", ("深色",), ("dark",)), ("colour", ("浅色",), ("light-colou", "pale")),
    ("shape", ("圆形", "圆"), ("round", "circl", "oval", "ellip")), ("shape", ("长方形", "矩形"), ("rectang", "oblong")),
    ("shape", ("正方形", "方形"), ("square",)), ("shape", ("三角形",), ("triang",)),
    ("shape", ("弯曲", "弯"), ("curv", "bend", "bent", "winding", "meander", "crook", "turn")),
    ("shape", ("笔直", "平直"), ("straight",)), ("shape", ("扇形",), ("fan$", "fanned", "fan-shaped")),
    ("shape", ("环形",), ("ring", "circular", "round", "loop")), ("shape", ("不规则",), ("irregular",)),
    ("position", ("左侧", "左边", "左"), ("left$",)), ("position", ("右侧", "右边", "右"), ("right$",)),
    ("position", ("上方", "上面", "顶部"), ("above", "over$", "top$", "upper")),
    ("position", ("下方", "下面", "底部"), ("below", "under", "beneath", "bottom", "lower")),
    ("position", ("中间", "中央", "中心", "中部"), ("middle", "center", "centre", "central", "between", "amid")),
    ("position", ("周围", "环绕", "围绕", "四周", "包围"), ("surround", "around", "encircl", "enclos", "ring")),
    ("position", ("两侧", "两边", "两岸", "两旁"), ("both side", "both bank", "either side", "two sides", "sides",
                                                 "banks", "along")),
    ("position", ("旁边", "附近", "边上", "一侧", "紧邻", "旁"), ("beside", "next to", "near", "close to", "closed to",
                                                            "adjacent", "alongside", "by the side", "side")),
    ("position", ("之间",), ("between", "among", "amid")), ("position", ("对面",), ("opposite", "across")),
    ("position", ("穿过", "横穿", "贯穿", "穿越"), ("through", "cross", "travers", "pass")),
    ("position", ("沿着", "沿"), ("along",)),
)


@functools.lru_cache(maxsize=1)
def _attribute_forms() -> tuple[tuple[str, int], ...]:
    return tuple(sorted(((f, i) for i, (_, forms, _) in enumerate(ATTRIBUTES) for f in forms),
                        key=lambda fi: -len(fi[0])))


@functools.lru_cache(maxsize=65536)
def attribute_spans(text: str) -> tuple[tuple[int, int, int], ...]:
    """(start, end, index in ATTRIBUTES) for each attribute word of Chinese text, longest first, no overlap."""
    return tuple(spans(text, _attribute_forms()))


@functools.lru_cache(maxsize=65536)
def attributes_zh(text: str) -> tuple[tuple[str, int], ...]:
    """(form, index in ATTRIBUTES) for each attribute word of Chinese text, longest first, no overlap."""
    return tuple((text[s:e], i) for s, e, i in attribute_spans(text))


@functools.lru_cache(maxsize=65536)
def attributes_en(english: str) -> frozenset[int]:
    """Indexes of the ATTRIBUTES an English text says (its stems)."""
    return frozenset(i for i, (_, _, stems) in enumerate(ATTRIBUTES) if _english_says(english, stems))


def invented_attributes(text: str, sources: list[str], english: str = "") -> list[str]:
    """Colour, shape and position words of ``text`` that no source says (Chinese forms or English stems)."""
    said = {i for s in sources for _, i in attributes_zh(s)} | (attributes_en(english) if english else frozenset())
    return list(dict.fromkeys(form for form, i in attributes_zh(text) if i not in said))


def term_forms(term: str) -> frozenset[str]:
    """The Chinese forms that count as a glossary term (路 for 道路, 车 for 汽车); the term alone if unknown."""
    return _term_forms().get(term, frozenset({term}))


# -- length ----------------------------------------------------------------------------------

def cjk_len(text: str) -> int:
    return len(_CJK.findall(text))


def distinct_content(sources: list[str]) -> int:
    """Chinese characters of the distinct words of the sources: what a merge must at least say."""
    from .glossary import tokenize_zh

    words = {w for s in sources for w in tokenize_zh(s) if _CJK.search(w)}
    return sum(cjk_len(w) for w in words)


# A paragraph shorter than this share of the sources' distinct words has dropped content (hand
# merges of the sample and of real UCM/Sydney captions: 0.82-1.44); one longer than all sources
# together plus a few joining words has added some (hand merges: at most 0.93 of the sum).
MIN_PARAGRAPH_SHARE = 0.6
MAX_PARAGRAPH_GROWTH = 1.15
PARAGRAPH_SLACK = 8


def length_problem(paragraph: str, sources: list[str]) -> str:
    """'short' / 'long' when a paragraph's length is far from what its sources say, else ''."""
    n = cjk_len(paragraph)
    if n < MIN_PARAGRAPH_SHARE * distinct_content(sources):
        return "short"
    if n > MAX_PARAGRAPH_GROWTH * sum(cjk_len(s) for s in sources) + PARAGRAPH_SLACK:
        return "long"
    return ""


# Chinese characters per English letter: 0.22-0.44 in the sample's and the hand translations (103);
# short English compresses most ("there is a piece of bareland" -> 一片裸地, 0.17), so only English
# of 30 letters or more is held to the lower bound.
MIN_TRANSLATION_RATIO = 0.12
MIN_RATIO_LETTERS = 30
MAX_TRANSLATION_RATIO = 1.0
TRANSLATION_SLACK = 6


def translation_length_problem(english: str, chinese: str) -> str:
    """'short' / 'long' when a translation is far shorter or longer than its English could say."""
    letters = len(re.findall(r"[A-Za-z]", english))
    n = cjk_len(chinese)
    if letters >= MIN_RATIO_LETTERS and n < MIN_TRANSLATION_RATIO * letters:
        return "short"
    if n > MAX_TRANSLATION_RATIO * letters + TRANSLATION_SLACK:
        return "long"
    return ""


# -- validator version -----------------------------------------------------------------------

def validator_version(*checks) -> str:
    """A digest of this module, the glossary and the given check functions' code.

    Cached answers carry the digest of the code that accepted them; when it differs, they are
    checked again on read. A change to any check therefore re-checks old answers (once) instead of
    trusting them or asking again.
    """
    h = hashlib.sha1()
    for obj in (inspect.getmodule(validator_version), glossary, *checks):
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):  # no source (frozen install): fall back to the names
            h.update(getattr(obj, "__qualname__", getattr(obj, "__name__", "?")).encode())
    return h.hexdigest()[:12]
