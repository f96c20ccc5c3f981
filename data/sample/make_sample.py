"""Regenerate the bundled sample's JSON files from the captions below.

The captions were written by looking at each image; every sentence says only
what is visible, and English terms map to Chinese as in remoteglm.data.glossary
(beach -> 海滩, road -> 道路 ...). Run from anywhere:

    python data/sample/make_sample.py                  # rewrite the JSON files
    python data/sample/make_sample.py --src DIR        # also copy the images from DIR

Output is deterministic (fixed order, no randomness; tokens come from jieba 0.42.1).
"""

import argparse
import json
import os
import shutil
from pathlib import Path

import jieba

HERE = Path(__file__).resolve().parent

# (English, Chinese) scene classes, in the order the classification prompt lists them.
CLASSES = [
    ("farmland", "农田"),
    ("residential", "住宅区"),
    ("ocean", "海洋"),
    ("beach", "海滩"),
    ("wetland", "湿地"),
    ("river", "河流"),
    ("forest", "森林"),
    ("road", "道路"),
]
CLASS_ZH = dict(CLASSES)

# file name, class, split, five (English, Chinese) sentences.
IMAGES = [
    ("s2_farmland.png", "farmland", "train", [
        ("There are many farmlands of different colors.", "有许多不同颜色的农田。"),
        ("Some farmlands are green and some are light brown.", "一些农田是绿色的，一些是浅褐色的。"),
        ("Dark strips of trees separate the farmlands.", "深色的树木带把农田分隔开。"),
        ("A straight road crosses the farmlands.", "一条笔直的道路穿过农田。"),
        ("The farmlands are in irregular shapes.", "农田的形状不规则。"),
    ]),
    ("s2_town.png", "residential", "train", [
        ("Many buildings are located in a small town.", "一个小城镇里有许多建筑。"),
        ("Some large white buildings are beside the main road.", "主要道路旁边有一些白色的大型建筑。"),
        ("Several roads pass through the town.", "几条道路穿过城镇。"),
        ("The houses are surrounded by green trees.", "房屋被绿色的树木环绕。"),
        ("There are farmlands and dark forests around the town.", "城镇周围有农田和深色的森林。"),
    ]),
    ("s2_ocean.png", "ocean", "train", [
        ("It is a piece of blue ocean.", "这是一片蓝色的海洋。"),
        ("The ocean covers the whole image.", "海洋覆盖了整幅图像。"),
        ("There are many small white spots on the sea surface.", "海面上有许多白色的小点。"),
        ("Fine ripples can be seen on the sea surface.", "海面上可以看到细小的波纹。"),
        ("There is no land in the image.", "图像中没有陆地。"),
    ]),
    ("s2_coastline.png", "beach", "val", [
        ("A long white beach lies between the ocean and the land.", "一条长长的白色海滩位于海洋和陆地之间。"),
        ("The ocean on the right is light blue.", "右侧的海洋是浅蓝色的。"),
        ("The coastline is almost straight.", "海岸线几乎是笔直的。"),
        ("There is a dark marsh with winding creeks on the left.", "左侧是一片有蜿蜒水道的深色沼泽。"),
        ("Fine ripples can be seen on the sea surface.", "海面上可以看到细小的波纹。"),
    ]),
    ("s2_marsh.png", "wetland", "train", [
        ("Many winding creeks run through a large marsh.", "许多蜿蜒的水道穿过一大片沼泽。"),
        ("Several wide creeks branch in the marsh.", "几条较宽的水道在沼泽中分叉。"),
        ("The marsh is dark reddish brown.", "沼泽呈深红褐色。"),
        ("A white beach lies along the right edge of the marsh.", "沼泽的右侧边缘有一条白色的海滩。"),
        ("The ocean is on the right side of the beach.", "海滩的右侧是海洋。"),
    ]),
    ("s2_inlet.png", "river", "train", [
        ("A winding river flows through the farmlands.", "一条蜿蜒的河流流经农田。"),
        ("The river is wide on the left and narrow on the right.", "河流左侧较宽，右侧较窄。"),
        ("There are many farmlands on both sides of the river.", "河流两岸有许多农田。"),
        ("Dark trees grow along the river banks.", "河岸上长着深色的树木。"),
        ("Some houses and roads are in the lower right.", "右下方有一些房屋和道路。"),
    ]),
    ("OSBS_029.tif", "forest", "test", [
        ("Many green trees are scattered in this area.", "这个区域散布着许多绿色的树木。"),
        ("Light grey bare ground can be seen between the trees.", "树木之间可以看到浅灰色的裸露地面。"),
        ("The trees cast dark shadows.", "树木投下了深色的阴影。"),
        ("The trees are sparse in some places and dense in others.", "有些地方树木稀疏，有些地方树木茂密。"),
        ("There are some white patches on the ground.", "地面上有一些白色的斑块。"),
    ]),
    ("SOAP_031.png", "forest", "train", [
        ("Many green trees form a dense forest.", "许多绿色的树木组成了一片茂密的森林。"),
        ("Several fallen trees lie on the ground.", "地面上躺着几棵倒下的树。"),
        ("Some dead trees are grey.", "一些枯树呈灰色。"),
        ("The trees cast long dark shadows.", "树木投下了长长的深色阴影。"),
        ("There is some green grassland in the upper left.", "左上方有一些绿色的草地。"),
    ]),
    ("SOAP_061.png", "forest", "val", [
        ("Many trees are scattered on the green ground.", "绿色的地面上散布着许多树木。"),
        ("Several grey dead trees stand among the green trees.", "绿色的树木中有几棵灰色的枯树。"),
        ("Many fallen trees lie on the ground.", "地面上躺着许多倒下的树。"),
        ("The trees in the lower left are dense.", "左下方的树木比较茂密。"),
        ("The trees cast dark shadows on the ground.", "树木在地面上投下深色的阴影。"),
    ]),
    ("YELL_road.png", "road", "test", [
        ("A curved road passes through a forest.", "一条弯曲的道路穿过森林。"),
        ("The road has a yellow line in the middle.", "道路中间有一条黄线。"),
        ("Many dark green trees are on both sides of the road.", "道路两侧有许多深绿色的树木。"),
        ("There is a strip of green grass along the road.", "道路旁边有一条绿色的草带。"),
        ("Some fallen trees lie on the ground in the right part.", "右侧的地面上躺着一些倒下的树。"),
    ]),
]

# Short prompts: VisualGLM's default 64-token source budget includes the 32 image slots.
DESCRIBE_PROMPTS = ["描述这张图片。", "请描述这幅遥感图像的内容。", "这张遥感影像中有什么？"]
DETAIL_PROMPT = "请详细描述这幅遥感图像。"
# With the class list this prompt may not fit VisualGLM's default max_source_length of 64
# (32 of those are image slots): train with a larger one rather than let the prompt be cut.
CLASSIFY_PROMPT = "这张遥感图像属于以下哪一类场景：" + "、".join(zh for _, zh in CLASSES) + "？请只回答类别名称。"


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def karpathy_dataset() -> dict:
    images = []
    for imgid, (name, cls, split, sents) in enumerate(IMAGES):
        assert len(sents) == 5, name
        sentences = [
            {"raw": zh, "raw_en": en, "tokens": jieba.lcut(zh), "imgid": imgid, "sentid": imgid * 5 + k}
            for k, (en, zh) in enumerate(sents)
        ]
        images.append({
            "filename": f"images/{name}",
            "imgid": imgid,
            "split": split,
            "class": cls,
            "class_zh": CLASS_ZH[cls],
            "sentids": [s["sentid"] for s in sentences],
            "sentences": sentences,
        })
    return {
        "dataset": "sample",
        "classes": [en for en, _ in CLASSES],
        "classes_zh": [zh for _, zh in CLASSES],
        "images": images,
    }


def finetune_records(split: str) -> list[dict]:
    """Per image: 5 one-sentence descriptions, 1 five-sentence description, 1 classification."""
    records = []
    for name, cls, img_split, sents in IMAGES:
        if img_split != split:
            continue
        img = f"images/{name}"
        for k, (_, zh) in enumerate(sents):
            records.append({"img": img, "prompt": DESCRIBE_PROMPTS[k % len(DESCRIBE_PROMPTS)], "label": zh})
        records.append({"img": img, "prompt": DETAIL_PROMPT, "label": "".join(zh for _, zh in sents)})
        records.append({"img": img, "prompt": CLASSIFY_PROMPT, "label": CLASS_ZH[cls]})
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, help="folder holding the source images to copy into images/")
    args = ap.parse_args()
    jieba.setLogLevel(60)  # silence jieba's dictionary-loading chatter

    img_dir = HERE / "images"
    if args.src:
        img_dir.mkdir(exist_ok=True)
        for name, *_ in IMAGES:
            shutil.copyfile(args.src / name, img_dir / name)
    missing = [n for n, *_ in IMAGES if not (img_dir / n).is_file()]
    if missing:
        raise SystemExit(f"error: {img_dir} lacks {', '.join(missing)}; pass --src with the source images")

    write_json(HERE / "dataset_sample_zh.json", karpathy_dataset())
    for split in ("train", "val", "test"):
        write_json(HERE / f"sample_{split}.json", finetune_records(split))


if __name__ == "__main__":
    main()
