"""Chinese caption data: load English caption sets, translate with an LLM, build fine-tune files.

Public API (stable for the training, evaluation and serving code)::

    from remoteglm.data import load_zh_dataset, build_finetune_records, CLASS_NAMES_ZH, tokenize_zh
"""

from .build import build_finetune_records, build_zh_dataset, check_no_leak, image_path, load_zh_dataset
from .datasets import CaptionImage, CaptionSet, check_images, load_captions, scene_class
from .glossary import CLASS_NAMES_ZH, CLASSES, GLOSSARY, class_names_zh, tokenize_zh, write_jieba_userdict
from .pipeline import PipelineConfig, run

__all__ = [
    "CLASSES", "CLASS_NAMES_ZH", "GLOSSARY", "CaptionImage", "CaptionSet", "PipelineConfig",
    "build_finetune_records", "build_zh_dataset", "check_images", "check_no_leak", "class_names_zh",
    "image_path", "load_captions", "load_zh_dataset", "run", "scene_class", "tokenize_zh",
    "write_jieba_userdict",
]
