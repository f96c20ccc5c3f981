"""A synthetic caption set the size and shape of RSICD, for when the real one is absent.

RSICD: 10,921 images of 30 scene classes (``class_N.jpg``), five English captions each
(54,605 sentences, about 18k distinct: many images repeat a class's stock phrases), Karpathy
split 8734 / 1094 / 1093, and the junk caption "1" twice. The sentences here come from
templates over remote-sensing objects, numbers, colours and positions, seeded.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CLASSES = ["airport", "bareland", "baseballfield", "beach", "bridge", "center", "church", "commercial",
           "denseresidential", "desert", "farmland", "forest", "industrial", "meadow", "mediumresidential",
           "mountain", "park", "parking", "playground", "pond", "port", "railwaystation", "resort", "river",
           "school", "sparseresidential", "square", "stadium", "storagetanks", "viaduct"]
# The words are ones an LLM stand-in with a small dictionary (tests/data/fake_llm.py) can translate,
# so every sentence has a faithful answer to find.
OBJECTS = ["building", "tree", "road", "car", "house", "plane", "ship", "boat", "storage tank", "pond", "runway",
           "river", "bridge", "railway", "lawn", "parking lot", "tennis court", "swimming pool", "beach", "meadow",
           "forest", "square", "stadium", "viaduct", "farmland", "park", "roof", "path", "street"]
COLOURS = ["white", "green", "red", "grey", "dark", "brown", "blue", "yellow", "big", "small", "large"]
NUMBERS = ["two", "three", "four", "five", "six", "several", "many", "some"]
PLACES = ["next to", "beside", "near", "around", "on both sides of", "along", "in front of", "close to"]
TEMPLATES = [
    "{n} {c} {os} are {p} the {o2}",
    "there are {n} {c} {os} {p} a {o2}",
    "a {c} {o} is {p} {n} {o2s}",
    "{n} {os} and a {c} {o2} are {p} the {o3}",
    "many {os} are {p} the {c} {o2}",
    "{n} {c} {os} are {p} a {o2} and {n2} {o3s}",
]


def plural(phrase: str) -> str:
    *head, last = phrase.split()
    if last.endswith("y") and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    elif last.endswith(("s", "sh", "ch", "x")):
        last += "es"
    else:
        last += "s"
    return " ".join([*head, last])


def build(out: Path, seed: int = 0, images: int = 10921, distinct_per_class: int = 650) -> Path:
    rng = random.Random(seed)
    pools: dict[str, list[str]] = {}
    for cls in CLASSES:
        seen: set[str] = set()
        while len(seen) < distinct_per_class:
            t = rng.choice(TEMPLATES)
            o, o2, o3 = rng.sample(OBJECTS, 3)
            s = t.format(n=rng.choice(NUMBERS), n2=rng.choice(NUMBERS), c=rng.choice(COLOURS), o=o, os=plural(o),
                         o2=o2, o2s=plural(o2), o3=o3, o3s=plural(o3), p=rng.choice(PLACES))
            seen.add(s[0].upper() + s[1:] + " .")
        pools[cls] = sorted(seen)
    data = []
    per = images // len(CLASSES) + 1
    for cls in CLASSES:
        for k in range(1, per + 1):
            if len(data) >= images:
                break
            sents = rng.sample(pools[cls], 5)
            data.append({"filename": f"{cls}_{k}.jpg", "imgid": len(data), "sentences": [{"raw": s} for s in sents]})
    order = list(range(len(data)))
    rng.shuffle(order)
    for rank, i in enumerate(order):
        data[i]["split"] = "test" if rank < 1093 else "val" if rank < 1093 + 1094 else "train"
    data[5]["sentences"][4]["raw"] = "1"  # RSICD's own junk caption, twice
    data[6]["sentences"][4]["raw"] = "1"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dataset": "rsicd", "images": data}), encoding="utf-8")
    return out


if __name__ == "__main__":
    import sys

    p = build(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/rsicd_synth/dataset_rsicd.json"))
    d = json.loads(p.read_text())
    sents = [s["raw"] for im in d["images"] for s in im["sentences"]]
    print(f"{p}: {len(d['images'])} images, {len(sents)} sentences, {len(set(sents))} distinct")
