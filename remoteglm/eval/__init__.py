"""Evaluation: Chinese caption metrics (word and char level), scene classification, RS VQA
accuracy per question type, published anchors (GeoChat), HTML report.

    python -m remoteglm.eval --compare BASE TUNED --data dataset_<name>_zh.json --split test
    python -m remoteglm.eval --from_pretrained CKPT --data rsvqa_hr_test.json   # task "vqa" records
    python -m remoteglm.eval --from_pretrained CKPT --data aid_test.json        # task "classify" records

Public API::

    from remoteglm.eval import score_captions, ClassParser, evaluate_classification, load_eval_set
    from remoteglm.eval import normalize_answer, evaluate_vqa, detect_benchmark
"""

from .anchors import ANCHORS, anchor_table, detect_benchmark
from .classify import CLASSIFY_PROMPT, ClassParser, classes_in_prompt, classify_prompt, evaluate_classification
from .evalset import CAPTION_PROMPT, EvalImage, EvalSet, VQAQuestion, find_leaks, load_eval_set, training_images
from .metrics import METRICS, bleu, cider_d, meteor, rouge_l, score_captions, score_tokens, tokenize_chars, tokenize_words
from .normalize import normalize_answer
from .vqa import QTYPES, evaluate_vqa, is_correct

__all__ = [
    "ANCHORS", "QTYPES", "anchor_table", "detect_benchmark", "evaluate_vqa", "is_correct", "normalize_answer",
    "CAPTION_PROMPT", "CLASSIFY_PROMPT", "METRICS", "ClassParser", "EvalImage", "EvalSet", "bleu", "cider_d",
    "classes_in_prompt", "classify_prompt", "evaluate_classification", "find_leaks", "load_eval_set", "meteor",
    "rouge_l", "score_captions", "VQAQuestion", "score_tokens", "tokenize_chars", "tokenize_words", "training_images",
]
