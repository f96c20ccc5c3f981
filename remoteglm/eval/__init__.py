"""Evaluation: Chinese caption metrics (word and char level), scene classification, HTML report.

    python -m remoteglm.eval --compare BASE TUNED --data dataset_<name>_zh.json --split test

Public API::

    from remoteglm.eval import score_captions, ClassParser, evaluate_classification, load_eval_set
"""

from .classify import CLASSIFY_PROMPT, ClassParser, classes_in_prompt, classify_prompt, evaluate_classification
from .evalset import CAPTION_PROMPT, EvalImage, EvalSet, find_leaks, load_eval_set, training_images
from .metrics import METRICS, bleu, cider_d, meteor, rouge_l, score_captions, score_tokens, tokenize_chars, tokenize_words

__all__ = [
    "CAPTION_PROMPT", "CLASSIFY_PROMPT", "METRICS", "ClassParser", "EvalImage", "EvalSet", "bleu", "cider_d",
    "classes_in_prompt", "classify_prompt", "evaluate_classification", "find_leaks", "load_eval_set", "meteor",
    "rouge_l", "score_captions", "score_tokens", "tokenize_chars", "tokenize_words", "training_images",
]
