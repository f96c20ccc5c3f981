"""Evaluate one checkpoint, or two side by side, on a split of a Chinese caption dataset.

    python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b \\
        --data data/ucm/dataset_ucm_zh.json --split test
    python -m remoteglm.eval --compare checkpoints/visualglm-6b checkpoints/finetune-visualglm-11-22-10-00 \\
        --data data/ucm/dataset_ucm_zh.json --train_data data/ucm/ucm_train.json

For every image: one caption (prompt 描述这张图片。) and, when the data has scene classes, one
classification answer (prompt listing the Chinese class names); greedy decoding, batched, with a
progress bar. Writes ``OUT/metrics.json`` and ``OUT/report.html``; answers are kept in
``OUT/answers/*.jsonl`` as they come, so an interrupted run continues where it stopped.

A fine-tune JSON of RSVQA questions (``task: "vqa"`` records) or of a folder-per-class scene set
(``task: "classify"`` records) is evaluated the same way: VQA accuracy overall and per question
type (remoteglm/eval/normalize.py), zero-shot scene accuracy per class with a confusion matrix; GeoChat's
published numbers are shown beside ours for UCM, AID and RSVQA-HR (remoteglm/eval/anchors.py).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.eval.anchors import BENCHMARKS, anchor_table, detect_benchmark
from remoteglm.eval.classify import CLASSIFY_PROMPT, ClassParser, evaluate_classification
from remoteglm.eval.evalset import (CAPTION_PROMPT, EvalSet, find_leaks, load_eval_set, recorded_train_data,
                                    training_images)
from remoteglm.eval.metrics import CIDER_NOTE, LEVEL_NOTES, LEVELS, METEOR_VARIANT, METRICS, score_captions
from remoteglm.eval.vqa import evaluate_vqa
from remoteglm.options import add_trust_arg

ANSWER_FORMAT = "process_response-1"  # bump when the prompt or the answer post-processing changes
VQA_NOTE = ("VQA: answers and labels normalised per question type (是/否; the first number, Chinese numerals read; "
            "农村/城市; area in RSVQA-HR bins of 平方米), correct when equal; unreadable answers are wrong; "
            "OA = correct / all questions, AA = mean of the per-type accuracies")

EXAMPLES = """examples:
  # one checkpoint on the test split
  python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b --data data/ucm/dataset_ucm_zh.json
  # base vs fine-tune on the same images, with the leakage guard against the training file
  python -m remoteglm.eval --compare checkpoints/visualglm-6b checkpoints/finetune-visualglm-11-22-10-00 \\
      --data data/ucm/dataset_ucm_zh.json --train_data data/ucm/ucm_train.json --out eval/ucm
  # a quick look: the first 20 images, 4-bit weights
  python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b --data data/ucm/ucm_test.json --limit 20 --quant 4
  # RSVQA-HR questions or a folder-per-class scene set (records with task "vqa" / "classify")
  python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b --data data/rsvqa_hr/rsvqa_hr_test.json
  python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b --data data/aid/aid_test.json
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m remoteglm.eval", description=__doc__.split("\n\n")[0],
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--from_pretrained", metavar="CKPT", help="checkpoint directory (sat or HF; base, LoRA, merged or quantised)")
    which.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two checkpoints (e.g. base and fine-tuned) on the same images")
    p.add_argument("--labels", nargs="+", help="names for the checkpoints in the report [folder names]")
    p.add_argument("--data", required=True,
                   help="dataset_<name>_zh.json (Karpathy style), a split's fine-tune JSON, or a file of RSVQA / "
                        "scene-set records (task \"vqa\" / \"classify\"), told apart by each record's task")
    p.add_argument("--split", default="test", help="split of a Karpathy dataset [test]")
    p.add_argument("--image_root", help="folder for relative image paths [the JSON's folder]")
    p.add_argument("--train_data", nargs="+", default=[], help="training file(s): refuse when evaluation images are in them")
    p.add_argument("--allow_leak", "--allow-leak", action="store_true",
                   help="evaluate even when images are in the training data (with a loud warning)")
    p.add_argument("--out", help="output folder [eval_results/<data>_<split>]")
    p.add_argument("--limit", type=int, help="only the first N images (with their questions)")
    p.add_argument("--batch_size", type=int, default=8, help="prompts per generation batch [8]")
    p.add_argument("--max_new_tokens", type=int, default=64, help="caption length limit in tokens [64]")
    p.add_argument("--repetition_penalty", type=float, default=1.2, help="as VisualGLM's chat() [1.2]; 1 = none")
    p.add_argument("--caption_prompt", default=CAPTION_PROMPT, help=f"[{CAPTION_PROMPT}]")
    p.add_argument("--classify_prompt", default=CLASSIFY_PROMPT,
                   help="template with {classes} (joined by 、) [the sample's prompt]; fine-tune JSON records keep their own")
    p.add_argument("--no_classify", action="store_true", help="no scene classification")
    p.add_argument("--no_vqa", action="store_true", help="skip the file's VQA questions")
    p.add_argument("--benchmark", default="auto", choices=["auto", "none", *BENCHMARKS],
                   help="whose published numbers to show beside ours [auto: from the file and folder names]")
    p.add_argument("--report_examples", type=int, default=5,
                   help="questions per type and images per class the report shows for VQA and scene sets [5]")
    p.add_argument("--quant", type=int, choices=[4, 8], help="quantise ChatGLM to 4 or 8 bits (bitsandbytes)")
    p.add_argument("--device", help="cuda, cuda:N or cpu [cuda if available]")
    p.add_argument("--dtype", help="fp16, bf16 or fp32 [fp16 on GPU, fp32 on CPU]")
    p.add_argument("--min_pixels", type=int, help="GLM-4.1V / Qwen2.5-VL checkpoints: smallest image area after resizing")
    p.add_argument("--max_pixels", type=int, help="GLM-4.1V / Qwen2.5-VL checkpoints: largest image area (28 x 28 = one token)")
    p.add_argument("--tokenizer", help="ice_text.model when the checkpoint folder has none")
    add_trust_arg(p)
    p.add_argument("--thumb_size", type=int, default=160, help="thumbnail size in the report, pixels [160]")
    return p


@dataclass
class Query:
    image: Path
    prompt: str
    max_new_tokens: int


# ---- generation with a resumable answer log ---------------------------------------------------------
def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """Changes whenever the checkpoint's files change (names, sizes, modification times)."""
    root = Path(path).resolve()
    items = []
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            st = (Path(dirpath) / f).stat()
            items.append(f"{os.path.relpath(os.path.join(dirpath, f), root)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("\n".join([str(root), *sorted(items)]).encode()).hexdigest()


class AnswerLog:
    """Answers appended as JSON lines; a rerun with the same checkpoint, prompts and settings
    reuses them (an unfinished last line from a crash is ignored)."""

    def __init__(self, path: Path, fingerprint: str, settings: dict):
        self.path = path
        self.base = {"ckpt": fingerprint, **settings}
        self.done: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.done[rec["key"]] = rec["answer"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def key(self, q: Query) -> str:
        blob = json.dumps({**self.base, "img": str(q.image.resolve()), "prompt": q.prompt, "max": q.max_new_tokens},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(blob.encode()).hexdigest()

    def add(self, pairs: list[tuple[Query, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for q, a in pairs:
                k = self.key(q)
                self.done[k] = a
                f.write(json.dumps({"key": k, "img": str(q.image), "prompt": q.prompt, "answer": a}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def generate_answers(engine, queries: Sequence[Query], log: AnswerLog, batch_size: int,
                     repetition_penalty: float, label: str) -> list[str]:
    """Greedy answers for ``queries`` from ``engine`` (a ``remoteglm.serve.engine.Engine``: the
    prompt and answer post-processing of the chat front ends); those already in ``log`` are
    reused; tqdm with ETA."""
    from tqdm import tqdm

    todo = [i for i, q in enumerate(queries) if log.key(q) not in log.done]
    bar = tqdm(total=len(queries), initial=len(queries) - len(todo), desc=f"generate [{label}]", unit="prompt",
               dynamic_ncols=True, file=sys.stderr)
    try:
        # Same-length answers batch together: captions first, then the short class answers.
        for limit in sorted({queries[i].max_new_tokens for i in todo}, reverse=True):
            group = [i for i in todo if queries[i].max_new_tokens == limit]
            for s in range(0, len(group), batch_size):
                chunk = [queries[i] for i in group[s:s + batch_size]]
                out = engine.batch([q.image for q in chunk], [q.prompt for q in chunk], batch_size=len(chunk),
                                   do_sample=False, max_new_tokens=limit, repetition_penalty=repetition_penalty)
                log.add(list(zip(chunk, out)))
                bar.update(len(chunk))
    finally:
        bar.close()
    return [log.done[log.key(q)] for q in queries]


def _load(path: str, args, label: str):
    """The engine for one checkpoint (either kind: ``remoteglm.serve.loading``)."""
    from remoteglm.serve.loading import load_engine

    engine, _ = load_engine(path, quant=args.quant, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype,
                            name=label, min_pixels=getattr(args, "min_pixels", None),
                            max_pixels=getattr(args, "max_pixels", None), progress=False)
    return engine


# ---- the evaluation -----------------------------------------------------------------------------------
def _labels(paths: list[str], labels: list[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(paths):
            raise RemoteGLMError(f"--labels needs {len(paths)} name(s), one per checkpoint (got {len(labels)})")
        out = list(labels)
    else:
        out = [Path(p).resolve().name or str(p) for p in paths]
        if len(paths) == 2 and out[0] == out[1]:
            out = [f"A: {out[0]}", f"B: {out[1]}"]
    if len(set(out)) != len(out):
        raise RemoteGLMError(f"the checkpoint labels must differ (got {out}); pass --labels base tuned")
    return out


def check_leakage(es: EvalSet, train_files: list[str], allow: bool, image_root=None) -> dict | None:
    """Refuse (RemoteGLMError) when evaluation images are in the training files, or warn loudly
    with ``allow``; returns the leak record for metrics.json (None when clean)."""
    if not train_files:
        return None
    train = training_images(train_files, image_root)
    leaks = find_leaks(es.images, train)
    if not leaks:
        return None
    files = sorted({f for _, f in leaks})
    example = leaks[0][0].key
    msg = (f"{len(leaks)} of {len(es.images)} evaluation images are in the training data {', '.join(files)} "
           f"(e.g. {example}): the scores would measure memorisation")
    if not allow:
        raise RemoteGLMError(f"{msg}; evaluate on held-out images (--split test) or pass --allow-leak to go on anyway")
    bar = "!" * 78
    print(f"{bar}\nWARNING: {msg}.\nWARNING: going on because of --allow-leak; the report is marked.\n{bar}",
          file=sys.stderr, flush=True)
    return {"count": len(leaks), "train_files": files, "images": [im.key for im, _ in leaks]}


def run_evaluation(args) -> dict:
    """Everything after argument parsing; returns the metrics dict (also written to disk)."""
    from remoteglm.io import write_json_atomic, write_text_atomic
    from remoteglm.eval.report import render_report
    paths = list(args.compare) if args.compare else [args.from_pretrained]
    labels = _labels(paths, args.labels)
    for p in paths:  # a wrong path should fail before anything slow
        from remoteglm.serve.loading import check_checkpoint

        check_checkpoint(p)
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise RemoteGLMError("--batch_size and --max_new_tokens must be >= 1")
    if "{classes}" not in args.classify_prompt:
        raise RemoteGLMError("--classify_prompt must contain {classes} (where the class list goes)")
    if args.report_examples < 0:
        raise RemoteGLMError("--report_examples must be >= 0")
    es = load_eval_set(args.data, args.split, args.image_root, args.limit, args.classify_prompt)
    train_files = list(args.train_data)
    for p in paths:
        train_files += [f for f in recorded_train_data(p) if f not in train_files]
    leak = check_leakage(es, train_files, args.allow_leak, args.image_root)

    cap_images = es.caption_images
    classify = es.has_classes and not args.no_classify
    cls_images = [im for im in es.images if classify and im.class_zh and im.classify_prompt]
    questions = [] if args.no_vqa else es.questions
    if not (cap_images or cls_images or questions):
        raise RemoteGLMError(f"{args.data}: nothing left to evaluate ({', '.join(es.tasks)} turned off by "
                             "--no_classify / --no_vqa)")
    out = Path(args.out) if args.out else Path("eval_results") / f"{Path(args.data).stem}_{es.split}"
    out.mkdir(parents=True, exist_ok=True)
    if es.skipped:
        print("not evaluated: " + ", ".join(f"{n} record(s) of task {t!r}" for t, n in sorted(es.skipped.items())),
              file=sys.stderr, flush=True)
    parser = ClassParser(es.classes) if cls_images else None
    # "answers": how answers are made (the prompt and post-processing): logs of older runs,
    # without the official punctuation rule or with <img></img> in text-only prompts, are not reused.
    settings = {"rp": args.repetition_penalty, "quant": args.quant, "dtype": args.dtype, "answers": ANSWER_FORMAT}
    cls_tokens = min(args.max_new_tokens, 16)  # class names and VQA answers are short
    shown = {im.key for im in cap_images} | {im.key for im in cls_images}
    runs, images = [], [
        {"key": im.key, "path": str(im.path), "class_zh": im.class_zh, "references": im.references, "answers": {}}
        for im in es.images if im.key in shown]
    by_key = {d["key"]: d for d in images}
    qrecords = [{"id": q.qid, "img": q.key, "path": str(q.path), "prompt": q.prompt, "label": q.label,
                 "qtype": q.qtype, "kind": q.kind, "answers": {}} for q in questions]
    refs = {im.key: im.references for im in cap_images}
    for path, label in zip(paths, labels):
        t0 = time.time()
        print(f"loading {path} ...", file=sys.stderr, flush=True)
        engine = _load(path, args, label)
        weights = engine.quant
        queries = [Query(im.path, args.caption_prompt, args.max_new_tokens) for im in cap_images]
        queries += [Query(im.path, im.classify_prompt, cls_tokens) for im in cls_images]
        queries += [Query(q.path, q.prompt, cls_tokens) for q in questions]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        log = AnswerLog(out / "answers" / f"{safe}.jsonl", checkpoint_fingerprint(path), settings)
        answers = generate_answers(engine, queries, log, args.batch_size, args.repetition_penalty, label)
        del engine
        gc.collect()
        _empty_cuda_cache()
        n_cap, n_cls = len(cap_images), len(cls_images)
        cap_answers, cls_answers, vqa_answers = answers[:n_cap], answers[n_cap:n_cap + n_cls], answers[n_cap + n_cls:]
        run = {"label": label, "checkpoint": str(Path(path).resolve()), "weights": weights, "caption": {}}
        if cap_images:
            captions = dict(zip((im.key for im in cap_images), cap_answers))
            per_image = {}
            for level in LEVELS:
                corpus, per = score_captions(captions, refs, level)
                run["caption"][level] = corpus
                per_image[level] = per
            for key, cap in captions.items():
                by_key[key]["answers"][label] = {"caption": cap, "scores": {lv: per_image[lv][key] for lv in LEVELS}}
        if cls_images:
            parsed = [parser.parse(a) for a in cls_answers]
            result = evaluate_classification([im.class_zh for im in cls_images], [c for c, _ in parsed], es.classes,
                                             [how for _, how in parsed])
            run["classification"] = result.to_dict()
            for im, a, (c, how) in zip(cls_images, cls_answers, parsed):
                by_key[im.key]["answers"].setdefault(label, {}).update({"classify": a, "class_pred": c, "match": how})
        if questions:
            result, per_q = evaluate_vqa([q.qtype for q in questions], [q.label for q in questions], vqa_answers,
                                         [q.kind for q in questions])
            run["vqa"] = result.to_dict()
            for rec, a, pq in zip(qrecords, vqa_answers, per_q):
                rec["expected"] = pq["expected"]
                rec["answers"][label] = {"answer": a, "normalized": pq["normalized"], "correct": pq["correct"]}
        run["seconds"] = round(time.time() - t0, 2)
        runs.append(run)

    benchmark = None if args.benchmark == "none" else (
        args.benchmark if args.benchmark != "auto" else detect_benchmark(es.source, [im.path for im in es.images]))
    tasks = [t for t, on in (("caption", cap_images), ("classify", cls_images), ("vqa", questions)) if on]
    metrics = {
        "dataset": es.name, "data_file": str(es.source.resolve()), "split": es.split, "n_images": len(es.images),
        "n_questions": len(questions), "tasks": tasks,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "generation": {"decoding": "greedy", "max_new_tokens": args.max_new_tokens, "classify_max_new_tokens": cls_tokens,
                       "vqa_max_new_tokens": cls_tokens,
                       "repetition_penalty": args.repetition_penalty, "batch_size": args.batch_size,
                       "caption_prompt": args.caption_prompt,
                       "classify_prompt_example": cls_images[0].classify_prompt if cls_images else None,
                       "vqa_prompt_example": questions[0].prompt if questions else None},
        "metric_notes": {"word": LEVEL_NOTES["word"], "char": LEVEL_NOTES["char"], "METEOR": METEOR_VARIANT,
                         "CIDEr-D": CIDER_NOTE, "metrics": list(METRICS), "vqa": VQA_NOTE},
        "classes": es.classes if cls_images else [],
        "qtypes": list(runs[0]["vqa"]["per_type"]) if questions else [],
        "leak": leak,
        "benchmark": benchmark,
        "anchors": anchor_table(benchmark, runs),
        "models": runs,
        "images": images,
        "questions": qrecords,
    }
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "report.html", render_report(metrics, args.thumb_size, args.report_examples))
    metrics["out_dir"] = str(out)
    return metrics


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def summary_table(m: dict) -> str:
    """Plain-text summary for the terminal, with the published anchors beside ours."""
    lines = []
    runs = m["models"]
    w = max(8, *(len(r["label"]) for r in runs))
    if any(r.get("caption") for r in runs):
        for level in LEVELS:
            lines.append(f"{LEVEL_NOTES[level]}")
            lines.append(f"  {'model':<{w}} " + " ".join(f"{k:>8}" for k in METRICS))
            for r in runs:
                lines.append(f"  {r['label']:<{w}} " + " ".join(f"{r['caption'][level][k]:>8.4f}" for k in METRICS))
    if m["classes"]:
        lines.append("scene classification accuracy")
        for r in runs:
            c = r["classification"]
            lines.append(f"  {r['label']:<{w}} {c['accuracy'] * 100:6.1f}%  ({c['correct']}/{c['n']}, parsed {c['parsed']})")
    if m.get("qtypes"):
        qtypes = m["qtypes"]
        cw = max(8, *(len(q) for q in qtypes))
        lines.append(f"VQA accuracy ({m['n_questions']} questions; OA = all questions, AA = mean over types)")
        lines.append(f"  {'model':<{w}} " + " ".join(f"{q:>{cw}}" for q in qtypes) + f" {'OA':>7} {'AA':>7}")
        for r in runs:
            v = r["vqa"]
            cells = " ".join(f"{v['per_type'][q]['accuracy'] * 100:>{cw - 1}.1f}%" for q in qtypes)
            lines.append(f"  {r['label']:<{w}} {cells} {v['accuracy'] * 100:>6.1f}% {v['average_accuracy'] * 100:>6.1f}%")
        lines.append("  n" + " " * (w - 1) + " " + " ".join(f"{r0:>{cw}}" for r0 in
                                                            (runs[0]["vqa"]["per_type"][q]["n"] for q in qtypes)))
    a = m.get("anchors")
    if a:
        lines.append(f"anchors: {a['source']} (English prompts) beside ours (Chinese prompts): not directly comparable")
        for row in a["rows"]:
            ours = ", ".join(f"{lab} {v:.2f}%" if v is not None else f"{lab} -" for lab, v in row["ours"].items())
            lines.append(f"  {a['benchmark']} {row['metric']}: GeoChat {row['value']:.2f}% | ours: {ours}")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from remoteglm import compat

    compat.single_process_env()
    from remoteglm.model.unpickle import trust_checkpoints

    trust_checkpoints(args.trust_checkpoint)
    m = run_evaluation(args)
    print(summary_table(m))
    print(f"wrote {Path(m['out_dir']) / 'metrics.json'} and {Path(m['out_dir']) / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
