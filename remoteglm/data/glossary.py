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
    # Folder-per-class scene sets (remoteglm.data.scenes): ids are the official folder names,
    # lower case, separators dropped ("parking_lot" -> "parkinglot"), in the folders' sorted order.
    "AID": [
        "airport", "bareland", "baseballfield", "beach", "bridge", "center", "church", "commercial",
        "denseresidential", "desert", "farmland", "forest", "industrial", "meadow",
        "mediumresidential", "mountain", "park", "parking", "playground", "pond", "port",
        "railwaystation", "resort", "river", "school", "sparseresidential", "square", "stadium",
        "storagetanks", "viaduct",
    ],
    "NWPU-RESISC45": [
        "airplane", "airport", "baseballdiamond", "basketballcourt", "beach", "bridge", "chaparral",
        "church", "circularfarmland", "cloud", "commercialarea", "denseresidential", "desert", "forest",
        "freeway", "golfcourse", "groundtrackfield", "harbor", "industrialarea", "intersection", "island",
        "lake", "meadow", "mediumresidential", "mobilehomepark", "mountain", "overpass", "palace",
        "parkinglot", "railway", "railwaystation", "rectangularfarmland", "river", "roundabout", "runway",
        "seaice", "ship", "snowberg", "sparseresidential", "stadium", "storagetank", "tenniscourt",
        "terrace", "thermalpowerstation", "wetland",
    ],
    "WHU-RS19": [
        "airport", "beach", "bridge", "commercial", "desert", "farmland", "footballfield", "forest",
        "industrial", "meadow", "mountain", "park", "parking", "pond", "port", "railwaystation",
        "residential", "river", "viaduct",
    ],
}
# The folder-per-class scene sets and the UCM scene set (its folders are UCM's 21 class ids).
SCENE_SETS = ("AID", "NWPU-RESISC45", "UCM", "WHU-RS19")

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
    # NWPU-RESISC45
    "basketballcourt": "篮球场", "circularfarmland": "圆形农田", "cloud": "云层", "commercialarea": "商业区",
    "groundtrackfield": "田径场", "industrialarea": "工业区", "island": "岛屿", "lake": "湖泊", "palace": "宫殿",
    "railway": "铁路", "rectangularfarmland": "矩形农田", "roundabout": "环岛", "seaice": "海冰", "ship": "船舶",
    "snowberg": "冰山", "storagetank": "储油罐", "terrace": "梯田", "thermalpowerstation": "火力发电站",
    "wetland": "湿地",
    # WHU-RS19
    "footballfield": "足球场",
}

# Other spellings of a class in folder names, as folder keys (lower case, letters and digits only):
# each group is one class, whichever of its spellings a set uses ("Parking" / "parking_lot" /
# "ParkingLot"; "storage_tank" / "storagetanks"). A plural "s" is matched anyway.
_FOLDER_SPELLINGS: tuple[tuple[str, ...], ...] = (
    ("parking", "parkinglot", "carpark"),
    ("storagetanks", "storagetank", "tanks"),
    ("baseballdiamond", "baseballfield"),
    ("commercial", "commercialarea"),
    ("industrial", "industrialarea"),
    ("residential", "residentialarea"),
    ("denseresidential", "denseresidentialarea"),
    ("mediumresidential", "mediumresidentialarea"),
    ("sparseresidential", "sparseresidentialarea"),
    ("harbor", "harbour", "port"),
    ("railwaystation", "trainstation"),
    ("center", "centre", "citycenter", "citycentre"),
    ("farmland", "agricultural", "agriculture"),
    ("bareland", "barren", "barrenland"),
    ("footballfield", "soccerfield"),
    ("groundtrackfield", "trackfield"),
    ("snowberg", "iceberg"),
    ("thermalpowerstation", "thermalpowerplant", "powerplant", "powerstation"),
    ("mobilehomepark", "mobilehome"),
    ("golfcourse", "golffield"),
    ("airplane", "plane", "aircraft"),
    ("buildings", "building"),
    ("seaice", "ice"),
    ("tenniscourt", "tenniscourts"),
)
_SPELLING_GROUP = {k: i for i, group in enumerate(_FOLDER_SPELLINGS) for k in group}

CLASS_NAMES_ZH: dict[str, dict[str, str]] = {
    name: {c: _CLASS_ZH[c] for c in classes} for name, classes in CLASSES.items()
}

# Object categories of the detection sets, spelled as their annotation files spell them: DIOR's 20
# (Li et al. 2020; also DIOR-RSVG's), DOTA v1.0's 15, then container-crane (v1.5), airport and
# helipad (v2.0).
DETECTION_CLASSES: dict[str, list[str]] = {
    "DIOR": [
        "airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
        "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield", "harbor",
        "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle", "windmill",
    ],
    "DOTA": [
        "plane", "ship", "storage-tank", "baseball-diamond", "tennis-court", "basketball-court",
        "ground-track-field", "harbor", "bridge", "large-vehicle", "small-vehicle", "helicopter",
        "roundabout", "soccer-ball-field", "swimming-pool", "container-crane", "airport", "helipad",
    ],
}
# Chinese names of the object categories no scene class already names (keys as folder_key gives
# them); the others take the scene class's name, so a storage tank is 储油罐 everywhere.
_OBJECT_ZH: dict[str, str] = {
    "chimney": "烟囱", "dam": "大坝", "expresswayservicearea": "高速公路服务区",
    "expresswaytollstation": "高速公路收费站", "golffield": "高尔夫球场", "trainstation": "火车站",
    "vehicle": "车辆", "windmill": "风车", "plane": "飞机", "largevehicle": "大型车辆",
    "smallvehicle": "小型车辆", "helicopter": "直升机", "soccerballfield": "足球场",
    "swimmingpool": "游泳池", "containercrane": "集装箱起重机", "helipad": "直升机停机坪",
}


def object_name_zh(category: str) -> str | None:
    """The Chinese name of a detection category as an annotation file spells it
    ("storage-tank", "Expressway-toll-station"), or None for a category the glossary lacks."""
    key = folder_key(category)
    return _OBJECT_ZH.get(key) or _CLASS_ZH.get(key)


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
    """Chinese class names of a dataset in class-id order (UCM, Sydney, RSICD or a scene set)."""
    return [CLASS_NAMES_ZH[dataset][c] for c in CLASSES[dataset]]


def folder_key(name: str) -> str:
    """A class folder's name as a key: lower case, letters and digits only ("Parking_Lot" -> "parkinglot")."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _spellings(key: str) -> set:
    forms = {key, key + "s"}
    if key.endswith("es"):
        forms.add(key[:-2])
    if key.endswith("s"):
        forms.add(key[:-1])
    return forms


def folder_class(dataset: str, folder: str) -> str | None:
    """The class id of ``dataset`` a folder name stands for, or None.

    The folder key itself, then its singular/plural, then another spelling of the same class
    (``_FOLDER_SPELLINGS``): "ParkingLot" in AID is ``parking``, "storage_tank" in UCM is
    ``storagetanks``, "footballField" in WHU-RS19 is ``footballfield``.
    """
    classes = CLASSES[dataset]
    key = folder_key(folder)
    if key in classes:
        return key
    forms = _spellings(key)
    for c in classes:
        if c in forms:
            return c
    groups = {_SPELLING_GROUP[f] for f in forms if f in _SPELLING_GROUP}
    hits = [c for c in classes if groups & {_SPELLING_GROUP.get(f) for f in _spellings(c)}]
    return hits[0] if len(hits) == 1 else None


def zh_words() -> list[str]:
    """Every Chinese term the project uses, for the word segmenter's dictionary."""
    words = set(GLOSSARY.values()) | set(_CLASS_ZH.values())
    return sorted(w for w in words if len(w) > 1)


def write_jieba_userdict(path: str | Path) -> Path:
    """Write a jieba user dictionary (``word freq pos`` per line) holding every glossary term."""
    from ..io import write_text_atomic

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
