"""The instruction texts of fine-tune records, each defined once, and the seeded pick among them.

Everything that writes or asks these questions imports them from here: the data builders
(``build.py``, the scene importer, the conversation drafts of ``phrasing.py``), training on a
Karpathy dataset directly (``data/records.py``) and evaluation (``eval/``). The module imports
nothing, so it sits below every stage.
"""

from __future__ import annotations

import random
from typing import Sequence

# One-sentence descriptions: a caption record's question, drawn per record (seeded).
SENTENCE_PROMPTS = (
    "描述这张图片。", "请用一句话描述这张遥感图像。", "这张遥感图像里有什么？", "用一句话概括这张航拍图像的内容。",
    "简要描述图中的场景。", "这张卫星图像展示了什么？", "请描述这幅遥感影像。", "图中能看到什么？用一句话回答。",
)
# Paragraph labels (the rewrite step).
PARAGRAPH_PROMPTS = (
    "详细描述这张遥感图像。", "请描述这张航拍图像中的场景和地物。", "这张遥感图像里有哪些地物？请用一段话描述。",
    "请用一段话描述这幅遥感影像的内容。", "描述这张图片。",
)
# With --tasks a paragraph is asked for in words no one-sentence record uses.
DESCRIPTION_PROMPTS = tuple(p for p in PARAGRAPH_PROMPTS if p not in SENTENCE_PROMPTS)

# Scene classification: the one template that the training records hold and that evaluation
# asks; the class names are joined with CLASS_SEPARATOR.
CLASSIFY_PROMPT = "这张遥感图像属于以下哪一类场景：{classes}？请只回答类别名称。"
CLASS_SEPARATOR = "、"


def classify_prompt(classes: Sequence[str], template: str = CLASSIFY_PROMPT) -> str:
    """The classification question listing ``classes`` (Chinese names, in the dataset's order)."""
    return template.format(classes=CLASS_SEPARATOR.join(classes))


def pick(pool: Sequence, seed: int, *key: object):
    """The seeded choice of one item of ``pool`` (an instruction text, a template, an object): a
    string seed gives the same choice for the same record on every machine and in any run order."""
    return random.Random("|".join(map(str, (seed, *key)))).choice(pool)
