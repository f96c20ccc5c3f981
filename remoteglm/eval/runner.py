"""One evaluation, after its arguments are parsed (``run_evaluation``): the checks, the leakage
guard, each checkpoint's answers (loaded through the front ends' start-up, or read from saved
answer logs with ``--predictions``: no model), the caption, classification and VQA scores,
``metrics.json`` and ``report.html``."""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

from remoteglm.errors import RemoteGLMError
from remoteglm.eval.anchors import anchor_table, detect_benchmark
from remoteglm.eval.answer_log import (AnswerLog, Query, checkpoint_fingerprint, generate_answers, logged_codec,
                                       read_answers, saved_answers)
from remoteglm.eval.classify import ClassParser, evaluate_classification
from remoteglm.eval.grounded import BOX_KINDS, TEXT_KINDS, prompts, score_grounding
from remoteglm.model.image import image_size
from remoteglm.eval.evalset import EvalSet, find_leaks, load_eval_set, recorded_train_data, training_images
from remoteglm.eval.metrics import CIDER_NOTE, LEVEL_NOTES, LEVELS, METEOR_VARIANT, METRICS, score_captions
from remoteglm.eval.vqa import evaluate_vqa
from remoteglm.io import write_json_atomic, write_text_atomic

ANSWER_FORMAT = "process_response-1"  # bump when the prompt or the answer post-processing changes
VQA_NOTE = ("VQA: answers and labels normalised per question type (是/否; the first number, Chinese numerals read; "
            "农村/城市; area in RSVQA-HR bins of 平方米), correct when equal; unreadable answers are wrong; "
            "OA = correct / all questions, AA = mean of the per-type accuracies")

def _labels(paths: list[str], labels: list[str] | None, files: bool = False) -> list[str]:
    """--labels, or the checkpoint folders' names (``files``: the answer files' names without .jsonl)."""
    if labels:
        if len(labels) != len(paths):
            raise RemoteGLMError(f"--labels needs {len(paths)} name(s), one per checkpoint (got {len(labels)})")
        out = list(labels)
    else:
        out = [(Path(p).stem if files else Path(p).resolve().name) or str(p) for p in paths]
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
    from remoteglm.eval.report import render_report

    rescore = bool(args.predictions)  # saved answer logs instead of checkpoints: no model
    paths = list(args.predictions or args.compare or [args.from_pretrained])
    labels = _labels(paths, args.labels, files=rescore)
    if rescore:  # every file read and checked before anything is written
        logged = [read_answers(p) for p in paths]
    else:
        from remoteglm.serve.loading import check_checkpoint

        for p in paths:  # a wrong path should fail before anything slow
            check_checkpoint(p)
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise RemoteGLMError("--batch_size and --max_new_tokens must be >= 1")
    if "{classes}" not in args.classify_prompt:
        raise RemoteGLMError("--classify_prompt must contain {classes} (where the class list goes)")
    if args.report_examples < 0:
        raise RemoteGLMError("--report_examples must be >= 0")
    es = load_eval_set(args.data, args.split, args.image_root, args.limit, args.classify_prompt)
    train_files = list(args.train_data)
    for p in [] if rescore else paths:
        train_files += [f for f in recorded_train_data(p) if f not in train_files]
    leak = check_leakage(es, train_files, args.allow_leak, args.image_root)

    cap_images = es.caption_images
    classify = es.has_classes and not args.no_classify
    cls_images = [im for im in es.images if classify and im.class_zh and im.classify_prompt]
    questions = [] if args.no_vqa else es.questions
    items = es.grounding
    if not (cap_images or cls_images or questions or items):
        raise RemoteGLMError(f"{args.data}: nothing left to evaluate ({', '.join(es.tasks)} turned off by "
                             "--no_classify / --no_vqa)")
    cls_tokens = min(args.max_new_tokens, 16)  # class names and VQA answers are short
    queries = [Query(im.path, args.caption_prompt, args.max_new_tokens) for im in cap_images]
    queries += [Query(im.path, im.classify_prompt, cls_tokens) for im in cls_images]
    queries += [Query(q.path, q.prompt, cls_tokens) for q in questions]
    # (checked here, before anything is written; a checkpoint's answers then use its engine's codec)
    families, codecs = zip(*[_codec(args, p, rescore) if items else (None, None) for p in paths])
    codecs = list(codecs)
    sizes = {it.path: image_size(it.path) for it in items}
    # grounding prompts hold boxes in each family's own text, so every run has its own
    asked = [prompts(items, c, sizes) if c else [] for c in codecs]
    run_queries = [queries + [Query(it.path, pr, args.max_new_tokens) for it, pr in zip(items, a)] for a in asked]
    saved = [saved_answers(a, q, p) for a, q, p in zip(logged, run_queries, paths)] if rescore else None
    out = Path(args.out) if args.out else Path("eval_results") / f"{Path(args.data).stem}_{es.split}"
    out.mkdir(parents=True, exist_ok=True)
    if es.skipped:
        print("not evaluated: " + ", ".join(f"{n} record(s) of task {t!r}" for t, n in sorted(es.skipped.items())),
              file=sys.stderr, flush=True)
    parser = ClassParser(es.classes) if cls_images else None
    # "answers": how answers are made (the prompt and post-processing): logs of older runs,
    # without the official punctuation rule or with <img></img> in text-only prompts, are not reused.
    settings = {"rp": args.repetition_penalty, "quant": args.quant, "dtype": args.dtype, "answers": ANSWER_FORMAT}
    shown = {im.key for im in cap_images} | {im.key for im in cls_images}
    runs, images = [], [
        {"key": im.key, "path": str(im.path), "class_zh": im.class_zh, "references": im.references, "answers": {}}
        for im in es.images if im.key in shown]
    by_key = {d["key"]: d for d in images}
    qrecords = [{"id": q.qid, "img": q.key, "path": str(q.path), "prompt": q.prompt, "label": q.label,
                 "qtype": q.qtype, "kind": q.kind, "answers": {}} for q in questions]
    refs = {im.key: im.references for im in cap_images}
    grecords = [{"id": it.gid, "kind": it.kind, "img": it.key, "path": str(it.path), "prompt": it.prompt,
                 "label": it.label, "true_boxes": [list(b.xyxy) for b in it.label_boxes],
                 "prompt_boxes": [list(b.xyxy) for b in it.prompt_boxes], "answers": {}} for it in items]
    for i, (path, label) in enumerate(zip(paths, labels)):
        t0 = time.time()
        if rescore:
            answers, weights = saved[i], "saved answers (--predictions)"
        else:
            answers, weights, served = _generate(args, path, label, queries, out, settings, families[i], codecs[i],
                                                 items, sizes)
            if served is not codecs[i]:
                codecs[i], asked[i] = served, prompts(items, served, sizes)
        n_cap, n_cls, n_q = len(cap_images), len(cls_images), len(questions)
        cap_answers, cls_answers = answers[:n_cap], answers[n_cap:n_cap + n_cls]
        vqa_answers, g_answers = answers[n_cap + n_cls:n_cap + n_cls + n_q], answers[n_cap + n_cls + n_q:]
        run = {"label": label, "checkpoint": None if rescore else str(Path(path).resolve()), "weights": weights,
               "caption": {}}
        if items:
            scores, per_g = score_grounding(items, g_answers, codecs[i], sizes)
            run["family"] = families[i].name
            if "refer" in scores:
                run["grounding"] = scores["refer"]
            run["detection"] = {k: scores[k] for k in BOX_KINDS if k in scores}
            run["region_caption"] = {k: scores[k] for k in TEXT_KINDS if k in scores}
            for rec, pr, pg in zip(grecords, asked[i], per_g):
                rec["answers"][label] = {"prompt": pr, **pg}
        if rescore:
            run["predictions"] = str(Path(path).resolve())
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
    tasks = [t for t, on in (("caption", cap_images), ("classify", cls_images), ("vqa", questions),
                             ("grounding", items)) if on]
    metrics = {
        "dataset": es.name, "data_file": str(es.source.resolve()), "split": es.split, "n_images": len(es.images),
        "n_questions": len(questions), "n_grounding": len(items), "tasks": tasks,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "generation": {"decoding": "greedy", "max_new_tokens": args.max_new_tokens, "classify_max_new_tokens": cls_tokens,
                       "vqa_max_new_tokens": cls_tokens,
                       "repetition_penalty": args.repetition_penalty, "batch_size": args.batch_size,
                       "caption_prompt": args.caption_prompt,
                       "classify_prompt_example": cls_images[0].classify_prompt if cls_images else None,
                       "vqa_prompt_example": questions[0].prompt if questions else None,
                       "predictions": [str(Path(p).resolve()) for p in paths] if rescore else None},
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
        "grounding": grecords,
    }
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "report.html", render_report(metrics, args.thumb_size, args.report_examples))
    metrics["out_dir"] = str(out)
    return metrics


def _codec(args, path: str, rescore: bool):
    """(family, box codec) whose text a run's grounding prompts and answers are in: a checkpoint's
    own family at this run's resolution; for saved answers --family, else the family and the
    resolution their log recorded (--min_pixels / --max_pixels win)."""
    from remoteglm.registry import family_named, family_of

    if not rescore:
        fam = family_of(path)
        return fam, fam.box_codec(path, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    name, settings = logged_codec(path)
    if not (args.family or name):
        raise RemoteGLMError(f"{path} records no model family and the data has grounding records, whose boxes are "
                             "in the family's text: pass --family NAME")
    fam = family_named(args.family or name)
    if args.family and args.family != name:
        settings = {}  # the log's resolution was another family's
    return fam, fam.box_codec(None, min_pixels=args.min_pixels or settings.get("min_pixels"),
                              max_pixels=args.max_pixels or settings.get("max_pixels"))


def _generate(args, path: str, label: str, queries: list[Query], out: Path, settings: dict,
              family=None, codec=None, items=(), sizes=None) -> tuple[list[str], str, object]:
    """The checkpoint's answers to ``queries`` and to the grounding ``items`` (reused from its log
    where there), how its weights were loaded, and the box codec of the resolution the engine
    serves at (the run's own; it writes the grounding prompts and reads their answers)."""
    from remoteglm.serve.bootstrap import start_engine

    engine, _, _ = start_engine(args, path, name=label, progress=False)
    weights = engine.quant
    if items:
        codec = engine.box_codec or codec
        queries = queries + [Query(it.path, pr, args.max_new_tokens) for it, pr in zip(items, prompts(items, codec, sizes))]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    log = AnswerLog(out / "answers" / f"{safe}.jsonl", checkpoint_fingerprint(path), settings,
                    family.name if family else None, codec.settings if codec else None)
    answers = generate_answers(engine, queries, log, args.batch_size, args.repetition_penalty, label)
    del engine
    gc.collect()
    _empty_cuda_cache()
    return answers, weights, codec


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
