"""English -> Chinese remote-sensing terms and the Chinese scene-class names.

The glossary is given to the LLM and checked in its output, so one English term always becomes
the same Chinese term across the whole dataset. Generic words (road, tree, car ...) accept a
shorter form too; class and object names must appear exactly.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

# Scene classes of each dataset, in the order their ids / blocks use.
CLASSES: dict[str, list[str]] = {
    "UCM": [
        "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
        "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
        "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
        "sparseresidential", "storagetanks", "tenniscourt",
    ],
    "Sydney": ["residential", "airport", "meadow", "river", "ocean", "industrial", "runway"],
    "RSICD": [
        "airport", "bareland", "baseballfield", "beach", "bridge", "center", "church", "commercial",
        "denseresidential", "desert", "farmland", "forest", "industrial", "meadow",
        "mediumresidential", "mountain", "park", "parking", "playground", "pond", "port",
        "railwaystation", "resort", "river", "school", "sparseresidential", "square", "stadium",
        "storagetanks", "viaduct",
    ],
}

# One Chinese name per class id, shared by every dataset that uses the id.
_CLASS_ZH: dict[str, str] = {
    "agricultural": "农田", "airplane": "飞机", "baseballdiamond": "棒球场", "beach": "海滩",
    "buildings": "建筑物", "chaparral": "灌木丛", "denseresidential": "密集住宅区",
    "forest": "森林", "freeway": "高速公路", "golfcourse": "高尔夫球场", "harbor": "港口",
    "intersection": "十字路口", "mediumresidential": "中密度住宅区",
    "mobilehomepark": "移动房屋区", "overpass": "立交桥", "parkinglot": "停车场",
    "river": "河流", "runway": "跑道", "sparseresidential": "稀疏住宅区",
    "storagetanks": "储油罐", "tenniscourt": "网球场",
    "residential": "住宅区", "airport": "机场", "meadow": "草地", "ocean": "海洋",
    "industrial": "工业区",
    "bareland": "裸地", "baseballfield": "棒球场", "bridge": "桥梁", "center": "城市中心",
    "church": "教堂", "commercial": "商业区", "desert": "沙漠", "farmland": "农田",
    "mountain": "山地", "park": "公园", "parking": "停车场", "playground": "操场",
    "pond": "池塘", "port": "港口", "railwaystation": "火车站", "resort": "度假区",
    "school": "学校", "square": "广场", "stadium": "体育场", "viaduct": "高架桥",
}

CLASS_NAMES_ZH: dict[str, dict[str, str]] = {
    name: {c: _CLASS_ZH[c] for c in classes} for name, classes in CLASSES.items()
}

# English term -> preferred Chinese. Matched case-insensitively on word boundaries, with an
# optional plural "s"/"es"; longer terms win ("mobile home park" before "park").
GLOSSARY: dict[str, str] = {
    # scene classes as they appear in captions
    "farmland": "农田", "cropland": "耕地", "agricultural land": "农田",
    "airplane": "飞机", "plane": "飞机", "aircraft": "飞机",
    "baseball diamond": "棒球场", "baseball field": "棒球场",
    "beach": "海滩", "building": "建筑", "chaparral": "灌木丛",
    "dense residential area": "密集住宅区", "dense residential": "密集住宅区",
    "medium residential area": "中密度住宅区", "medium residential": "中密度住宅区",
    "sparse residential area": "稀疏住宅区", "sparse residential": "稀疏住宅区",
    "residential area": "住宅区", "residential": "住宅",
    "forest": "森林", "freeway": "高速公路", "highway": "公路",
    "golf course": "高尔夫球场", "harbor": "港口", "harbour": "港口", "port": "港口",
    "intersection": "十字路口", "crossroad": "十字路口", "t-junction": "丁字路口",
    "mobile home park": "移动房屋区", "mobile home": "移动房屋",
    "overpass": "立交桥", "viaduct": "高架桥", "parking lot": "停车场",
    "river": "河流", "runway": "跑道", "storage tank": "储油罐",
    "tennis court": "网球场", "basketball court": "篮球场", "swimming pool": "游泳池",
    "airport": "机场", "meadow": "草地", "grassland": "草地", "ocean": "海洋",
    "industrial area": "工业区", "commercial area": "商业区",
    "bare land": "裸地", "bareland": "裸地", "bridge": "桥", "church": "教堂",
    "desert": "沙漠", "mountain": "山", "park": "公园", "playground": "操场", "pond": "池塘",
    "railway station": "火车站", "train station": "火车站", "resort": "度假区",
    "school": "学校", "stadium": "体育场",
    # common objects
    "house": "房屋", "car": "汽车", "road": "道路", "railway": "铁路", "railroad": "铁路",
    "tree": "树", "lawn": "草坪", "turf": "草皮", "bush": "灌木", "boat": "船", "ship": "船",
    "speedboat": "快艇", "bunker": "沙坑", "container": "集装箱", "warehouse": "仓库",
    "roof": "屋顶", "sea": "海", "wave": "海浪", "river bank": "河岸", "parking space": "停车位",
    "pier": "码头", "wharf": "码头", "dock": "码头", "fuselage": "机身",
}

# Generic words where a shorter Chinese form is also correct (checked with any of these).
ACCEPTED: dict[str, tuple[str, ...]] = {
    "road": ("道路", "路"), "highway": ("公路", "路"), "tree": ("树",), "house": ("房屋", "房"),
    "car": ("汽车", "车"), "building": ("建筑", "楼"), "sea": ("海",), "wave": ("浪",),
    "boat": ("船", "艇"), "ship": ("船", "舰"), "bridge": ("桥",), "mountain": ("山",),
    "residential": ("住宅", "居民"), "roof": ("屋顶", "顶"), "bush": ("灌木",),
    "lawn": ("草坪", "草地"), "turf": ("草皮", "草坪"), "intersection": ("十字路口", "路口"),
    "crossroad": ("十字路口", "路口"), "pond": ("池塘", "水塘"),
}


@functools.lru_cache(maxsize=1)
def _term_regex() -> re.Pattern:
    terms = sorted(GLOSSARY, key=len, reverse=True)
    alts = "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in terms)
    return re.compile(rf"(?<![\w-])({alts})(?:s|es)?(?![\w-])", re.IGNORECASE)


def _canonical(match: str) -> str:
    return re.sub(r"\s+", " ", match.lower())


def find_terms(english: str) -> dict[str, str]:
    """Glossary terms in an English sentence -> their preferred Chinese (longest match wins)."""
    return {_canonical(m.group(1)): GLOSSARY[_canonical(m.group(1))] for m in _term_regex().finditer(english)}


def missing_terms(english: str, chinese: str) -> list[str]:
    """Terms of ``english`` whose Chinese (or an accepted short form) is absent from ``chinese``."""
    missing = []
    for en, zh in find_terms(english).items():
        forms = ACCEPTED.get(en, (zh,))
        if not any(f in chinese for f in forms):
            missing.append(f"{en}->{zh}")
    return missing


def apply_glossary(english: str) -> str:
    """Replace every glossary term with its Chinese (used by the test double and for hints)."""
    return _term_regex().sub(lambda m: GLOSSARY[_canonical(m.group(1))], english)


def class_names_zh(dataset: str) -> list[str]:
    """Chinese class names of a dataset in class-id order (UCM, Sydney or RSICD)."""
    return [CLASS_NAMES_ZH[dataset][c] for c in CLASSES[dataset]]


def zh_words() -> list[str]:
    """Every Chinese term the project uses, for the word segmenter's dictionary."""
    words = set(GLOSSARY.values()) | set(_CLASS_ZH.values())
    return sorted(w for w in words if len(w) > 1)


def write_jieba_userdict(path: str | Path) -> Path:
    """Write a jieba user dictionary (``word freq pos`` per line) holding every glossary term."""
    from .io import write_text_atomic

    lines = [f"{w} 2000 n" for w in zh_words()]
    return write_text_atomic(path, "\n".join(lines) + "\n")


@functools.lru_cache(maxsize=1)
def jieba_with_terms():
    """jieba with the glossary terms added, so "储油罐" stays one token; quiet at start-up."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    for w in zh_words():
        jieba.add_word(w, freq=2000, tag="n")
    return jieba


def tokenize_zh(text: str) -> list[str]:
    """Word tokens of a Chinese sentence (jieba + glossary), punctuation and spaces dropped."""
    return list(_tokens(text))


@functools.lru_cache(maxsize=65536)  # captions repeat a lot: segment each distinct one once
def _tokens(text: str) -> tuple[str, ...]:
    jb = jieba_with_terms()
    return tuple(t for t in jb.lcut(text) if t.strip() and not re.fullmatch(r"[\W_]+", t))
