"""Evaluation: Chinese caption metrics (word and char level), scene classification, RS VQA
accuracy per question type, published anchors (GeoChat), HTML report.

    python -m remoteglm.eval --compare BASE TUNED --data dataset_<name>_zh.json --split test
    python -m remoteglm.eval --from_pretrained CKPT --data rsvqa_hr_test.json   # task "vqa" records
    python -m remoteglm.eval --from_pretrained CKPT --data aid_test.json        # task "classify" records

Modules: ``evaluate`` (the command), ``runner`` (one evaluation), ``answer_log`` (batched answers,
resumable), ``evalset`` (what a data file asks, the leakage guard), ``metrics`` (BLEU, METEOR,
ROUGE-L, CIDEr-D), ``classify`` (class answers), ``vqa`` (question types, accuracy) over
``normalize`` (answers read per kind) and ``numbers``, ``anchors`` (published numbers),
``report`` (HTML), ``demo`` (the fine-tune's closing answer).
"""
