"""Published numbers shown next to ours: GeoChat's zero-shot scene classification (UCM, AID),
RSVQA-HR accuracy (presence, comparison), and VRSBench's referring Acc@0.5 / Acc@0.7 for GeoChat
fine-tuned on VRSBench and zero-shot (measured by VRSBench's authors).

They are anchors, not a leaderboard: GeoChat was asked in English (the original questions and
class names), RemoteGLM in Chinese (translated questions, Chinese class names), on its own split
of the images; the report and the terminal say so next to the numbers.

Which benchmark a run is: ``--benchmark NAME``, or (``auto``) read from the data file's name, its
folder, and the folders of its first image (``ucm_scene_test.json``, ``data/UCMerced_LandUse/``,
``aid_test.json``, ``rsvqa_hr_test.json``, ``RSVQA-HR/``, ``vrsbench_refer_test.json``).
"""

from __future__ import annotations

import re
from pathlib import Path

GEOCHAT = "GeoChat (Kuckreja et al., CVPR 2024)"

VRSBENCH = ("VRSBench (Li, Ding, Elhoseiny, arXiv:2406.12384; github.com/lx709/VRSBench, \"Object Referring "
            "Results\", All): test referring expressions in English, one box each, correct when IoU with the true box "
            "is over 0.5 / 0.7; GeoChat fine-tuned = LoRA rank 64, 5 epochs on VRSBench's training set")

# benchmark -> what GeoChat reports (or is reported to score), in percent; "who" is whose number
# it is; "metric" names a result of ours (see ours()).
ANCHORS: dict[str, dict] = {
    "UCM": {"task": "classify", "source": f"{GEOCHAT}, zero-shot scene classification, UC Merced Land Use",
            "rows": [{"who": "GeoChat", "metric": "accuracy", "name": "zero-shot accuracy 零样本准确率", "value": 84.43}]},
    "AID": {"task": "classify", "source": f"{GEOCHAT}, zero-shot scene classification, AID",
            "rows": [{"who": "GeoChat", "metric": "accuracy", "name": "zero-shot accuracy 零样本准确率", "value": 72.03}]},
    "RSVQA-HR": {"task": "vqa", "source": f"{GEOCHAT}, RSVQA-HR test",
                 "rows": [{"who": "GeoChat", "metric": "presence", "name": "presence accuracy 存在性", "value": 58.45},
                          {"who": "GeoChat", "metric": "comparison", "name": "comparison accuracy 比较", "value": 83.19}]},
    "VRSBench": {"task": "grounding", "source": VRSBENCH,
                 "rows": [{"who": "GeoChat fine-tuned", "metric": "acc@0.5", "name": "GeoChat 微调后 Acc@0.5", "value": 39.6},
                          {"who": "GeoChat fine-tuned", "metric": "acc@0.7", "name": "GeoChat 微调后 Acc@0.7", "value": 19.1},
                          {"who": "GeoChat zero-shot", "metric": "acc@0.5", "name": "GeoChat 零样本 Acc@0.5", "value": 12.9},
                          {"who": "GeoChat zero-shot", "metric": "acc@0.7", "name": "GeoChat 零样本 Acc@0.7", "value": 3.2}]},
}
RESULT_OF_TASK = {"classify": "classification", "vqa": "vqa", "grounding": "grounding"}  # task -> a run's result key
BENCHMARKS = tuple(ANCHORS)

NOT_COMPARABLE_ZH = ("GeoChat 的数字来自英文提示（英文原题、英文类别名），本报告的数字来自中文提示（翻译后的问题、中文类别名），"
                     "图像划分也可能不同，因此二者不能直接比较，只作参照。")
NOT_COMPARABLE_EN = ("GeoChat's numbers come from English prompts (the original English questions and class names); "
                     "ours come from Chinese prompts (translated questions, Chinese class names), possibly on other "
                     "images of the set. They are not directly comparable: anchors, not a ranking.")


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def _match(tokens: list[str]) -> str | None:
    joined = "".join(tokens)
    if "vrsbench" in tokens or joined.startswith("vrsbench"):
        return "VRSBench"
    if "rsvqahr" in tokens or any(a == "rsvqa" and b == "hr" for a, b in zip(tokens, tokens[1:])) \
            or joined.startswith("rsvqahr"):
        return "RSVQA-HR"
    if {"ucm", "ucmerced", "ucmercedlanduse"} & set(tokens) or any(a == "uc" and b == "merced" for a, b in zip(tokens, tokens[1:])):
        return "UCM"
    if "aid" in tokens:
        return "AID"
    return None


def detect_benchmark(data_file: str | Path, image_paths=()) -> str | None:
    """The benchmark a data file is from (a key of ``ANCHORS``), or None: its name first, then its
    folder, then the folders of the first image."""
    data_file = Path(data_file)
    names = [data_file.stem, data_file.parent.name]
    for p in list(image_paths)[:1]:
        names += [part for part in reversed(Path(p).parts[:-1])][:3]
    for n in names:
        found = _match(_tokens(n))
        if found:
            return found
    return None


def ours(run: dict, metric: str) -> float | None:
    """Our number (percent) for an anchor row's metric: classification accuracy, a VQA type's, or
    a grounding rate (``run["grounding"]`` from remoteglm.eval.grounding.score_referring)."""
    if metric.startswith("acc@"):
        g = run.get("grounding")
        return g[metric] * 100 if g else None
    if metric == "accuracy":
        c = run.get("classification")
        return c["accuracy"] * 100 if c else None
    t = (run.get("vqa") or {}).get("per_type", {}).get(metric)
    return t["accuracy"] * 100 if t else None


def anchor_table(benchmark: str | None, runs: list[dict]) -> dict | None:
    """``{"benchmark", "task", "source", "note_zh", "note_en", "rows": [{"who", "name", "metric", "value",
    "ours": {label: percent or None}}]}`` for metrics.json, or None when no anchor applies (no
    benchmark, or the runs lack its task)."""
    if not benchmark or benchmark not in ANCHORS:
        return None
    a = ANCHORS[benchmark]
    if not any(r.get(RESULT_OF_TASK[a["task"]]) for r in runs):
        return None
    rows = [{**row, "ours": {r["label"]: ours(r, row["metric"]) for r in runs}} for row in a["rows"]]
    return {"benchmark": benchmark, "task": a["task"], "source": a["source"], "note_zh": NOT_COMPARABLE_ZH,
            "note_en": NOT_COMPARABLE_EN, "rows": rows}
