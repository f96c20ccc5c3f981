"""The word lists of the faithfulness checks (``faithful.py``): mood and judgement words with the
English that says them, distinctive objects with their English stems, generic nouns, the
refusal / chatter / instruction patterns, and the colour, shape and position words.

Data only; ``faithful.validator_version`` digests this module with the checks, so a change here
re-checks cached answers.
"""

from __future__ import annotations

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
