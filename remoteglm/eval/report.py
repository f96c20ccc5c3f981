"""The evaluation report: one self-contained HTML file (no scripts, no network), images embedded
as base64 JPEG thumbnails, built from the ``metrics.json`` dict the evaluator writes.

Sections, as the data has them: caption metrics; scene classification (accuracy, GeoChat's
anchor for UCM / AID, per-class bars, confusion matrices); VQA (accuracy per question type with
OA and AA, GeoChat's RSVQA-HR anchors, example questions); side by side. Anchors always carry the
note that numbers from Chinese prompts are not directly comparable with GeoChat's English ones.
Large scene and VQA sets show ``examples`` images per class / questions per type (wrong answers
first); metrics.json keeps every answer.

Chinese text uses the system's CJK fonts (Debian: ``fonts-wqy-microhei``; Noto/Source Han,
Microsoft YaHei or PingFang elsewhere).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from remoteglm.eval.grounding_report import grounding_section
from remoteglm.eval.metrics import CIDER_NOTE, LEVEL_NOTES, METEOR_VARIANT, METRICS

FONTS = '"WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif'
COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948")

CSS = """
body { font-family: %s; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #eaf4ea; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
.note { color: #555; font-size: 13px; }
.leak { background: #fde2e1; border: 2px solid #c0392b; padding: 8px 12px; font-weight: bold; }
.cm td { text-align: center; min-width: 28px; }
.side img { width: %dpx; display: block; }
.side td.ans { width: 30%%; }
.side ol { margin: 0; padding-left: 20px; }
.ok { color: #1e7b34; } .bad { color: #b3261e; }
.small { font-size: 12px; color: #666; }
.anchor td.theirs { color: #555; font-style: italic; }
.vqa img { width: %dpx; display: block; }
"""


def thumbnail_data_uri(path: str | Path, size: int = 160) -> str | None:
    """A JPEG thumbnail as a data: URI, or None when the image cannot be read."""
    from remoteglm.model.image import load_image

    try:
        img = load_image(path).copy()
    except Exception:  # noqa: BLE001 - a missing thumbnail must not lose a finished evaluation
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _e(x) -> str:
    return html.escape(str(x))


def _answer(text: str) -> str:
    """A model's answer for the page: control characters removed (a random or broken model emits
    them), escaped; "(empty)" when nothing is left."""
    from remoteglm.serve.engine import strip_control

    shown = strip_control(text or "").strip()
    return _e(shown) if shown else "<i>(empty)</i>"


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def _caption_tables(m: dict) -> str:
    out = []
    for level in ("word", "char"):
        title = {"word": "词级 Word level", "char": "字级 Char level"}[level]
        rows = [(run["label"], run["caption"][level]) for run in m["models"]]
        best = {k: max(s[k] for _, s in rows) for k in METRICS}
        head = "".join(f"<th>{_e(k)}</th>" for k in METRICS)
        body = []
        for label, s in rows:
            cells = "".join(
                f'<td class="num{" best" if len(rows) > 1 and s[k] == best[k] else ""}">{_fmt(s[k])}</td>' for k in METRICS)
            body.append(f"<tr><th>{_e(label)}</th>{cells}</tr>")
        note = LEVEL_NOTES[level].split(": ", 1)[1]
        out.append(f'<table class="metrics" id="caption-{level}"><caption>{title}: {_e(note)}</caption>'
                   f"<tr><th>model</th>{head}</tr>{''.join(body)}</table>")
    notes = (f'<p class="note">{_e(METEOR_VARIANT)}.<br>{_e(CIDER_NOTE)}. BLEU/METEOR/ROUGE-L in [0, 1], '
             "CIDEr-D in [0, 10]; every image is scored against all of its references.</p>")
    return "".join(out) + notes


def _accuracy_table(m: dict) -> str:
    rows = []
    for run in m["models"]:
        c = run["classification"]
        kinds = c.get("match_kinds", {})
        rows.append(f"<tr><th>{_e(run['label'])}</th><td class='num'>{c['accuracy'] * 100:.1f}%</td>"
                    f"<td class='num'>{c['correct']}/{c['n']}</td><td class='num'>{c['parsed']}/{c['n']}</td>"
                    f"<td class='num'>{kinds.get('exact', 0)}</td><td class='num'>{kinds.get('synonym', 0)}</td>"
                    f"<td class='num'>{kinds.get('contains', 0)}</td></tr>")
    return ('<table id="accuracy"><caption>场景分类准确率 Scene classification accuracy</caption>'
            "<tr><th>model</th><th>accuracy</th><th>correct</th><th>parsed to a class</th>"
            "<th>exact</th><th>synonym</th><th>contains</th></tr>" + "".join(rows) + "</table>")


def per_class_svg(m: dict) -> str:
    """Grouped horizontal bars: accuracy of each model on each true class (inline SVG)."""
    runs = m["models"]
    classes = [c for c in m["classes"] if any(c in r["classification"]["per_class"] for r in runs)]
    bar, gap, label_w, width = 14, 10, 130, 360
    group = bar * len(runs) + gap
    legend_h = 22
    height = legend_h + group * len(classes) + 24
    parts = [f'<svg id="per-class-chart" xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 80}" '
             f'height="{height}" font-family=\'{FONTS}\' font-size="13">']
    x = label_w
    for i, run in enumerate(runs):
        parts.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{COLORS[i % len(COLORS)]}"/>'
                     f'<text x="{x + 16}" y="15">{_e(run["label"])}</text>')
        x += 30 + 8 * len(run["label"])
    for k, cls in enumerate(classes):
        y0 = legend_h + k * group
        n = next((r["classification"]["per_class"][cls]["n"] for r in runs if cls in r["classification"]["per_class"]), 0)
        parts.append(f'<text x="{label_w - 8}" y="{y0 + group / 2}" text-anchor="end">{_e(cls)} (n={n})</text>')
        for i, run in enumerate(runs):
            acc = run["classification"]["per_class"].get(cls, {}).get("accuracy", 0.0)
            y = y0 + i * bar
            parts.append(f'<rect x="{label_w}" y="{y}" width="{max(acc * width, 1):.1f}" height="{bar - 2}" '
                         f'fill="{COLORS[i % len(COLORS)]}"><title>{_e(run["label"])}: {acc * 100:.1f}%</title></rect>'
                         f'<text x="{label_w + max(acc * width, 1) + 4:.1f}" y="{y + bar - 4}" font-size="11">{acc * 100:.0f}%</text>')
    axis_y = legend_h + group * len(classes)
    parts.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + width}" y2="{axis_y}" stroke="#999"/>')
    for t in (0, 0.5, 1):
        parts.append(f'<text x="{label_w + t * width}" y="{axis_y + 16}" text-anchor="middle" font-size="11">{int(t * 100)}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def _confusion(run: dict) -> str:
    cm = run["classification"]["confusion"]
    rows, cols, mat = cm["rows"], cm["columns"], cm["matrix"]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r, row in zip(rows, mat):
        total = sum(row)
        if not total:
            continue
        cells = []
        for j, v in enumerate(row):
            a = v / total if total else 0
            hue = "30,120,52" if cols[j] == r else "179,38,30"
            style = f' style="background: rgba({hue},{a * 0.8:.2f})"' if v else ""
            cells.append(f"<td{style}>{v or ''}</td>")
        body.append(f"<tr><th>{_e(r)}</th>{''.join(cells)}</tr>")
    return (f'<table class="cm"><caption>混淆矩阵 Confusion matrix — {_e(run["label"])} '
            f'(rows: true class, columns: answer)</caption><tr><th></th>{head}</tr>{"".join(body)}</table>')


def _wrong_somewhere(im: dict, runs: list[dict]) -> bool:
    return any(im["answers"].get(r["label"], {}).get("class_pred") != im.get("class_zh") for r in runs)


def shown_images(m: dict, examples: int) -> list[dict]:
    """The images the side-by-side table shows: every captioned image; of images that only have a
    class (a scene set), ``examples`` per class, those some model got wrong first."""
    runs = m["models"]
    out, per_class = [], {}
    for im in m["images"]:
        if im["references"]:
            out.append(im)
        else:
            per_class.setdefault(im.get("class_zh"), []).append(im)
    for ims in per_class.values():
        ims = sorted(ims, key=lambda im: not _wrong_somewhere(im, runs))  # stable: file order within each group
        out.extend(ims[:examples])
    order = {im["key"]: i for i, im in enumerate(m["images"])}
    return sorted(out, key=lambda im: order[im["key"]])


def _side_by_side(m: dict, thumbs: dict[str, str | None], shown: list[dict]) -> str:
    runs = m["models"]
    with_refs = any(im["references"] for im in shown)
    head = "".join(f"<th>{_e(r['label'])}</th>" for r in runs)
    body = []
    for im in shown:
        uri = thumbs.get(im["key"])
        pic = f'<img src="{uri}" alt="{_e(im["key"])}">' if uri else '<span class="bad">(image not readable)</span>'
        cls = f"<br>类别 class: <b>{_e(im['class_zh'])}</b>" if im.get("class_zh") else ""
        refs = "".join(f"<li>{_e(r)}</li>" for r in im["references"])
        cells = []
        for r in runs:
            a = im["answers"].get(r["label"], {})
            cell = ""
            if "caption" in a:
                cell += f"<div>{_answer(a['caption'])}</div>"
                cell += f'<div class="small">CIDEr-D (word) {a["scores"]["word"]["CIDEr-D"]:.3f} · (char) {a["scores"]["char"]["CIDEr-D"]:.3f}</div>'
            if "classify" in a:
                ok = a.get("class_pred") == im.get("class_zh")
                mark = '<span class="ok">✓</span>' if ok else '<span class="bad">✗</span>'
                cell += (f'<div class="small">分类 class: {mark} {_answer(a["classify"])}'
                         f' → {_e(a.get("class_pred") or "unparsed")} ({_e(a.get("match", ""))})</div>')
            cells.append(f'<td class="ans">{cell}</td>')
        ref_cell = f"<td><ol>{refs}</ol></td>" if with_refs else ""
        body.append(f'<tr><td>{pic}<div class="small">{_e(im["key"])}</div>{cls}</td>{ref_cell}{"".join(cells)}</tr>')
    note = ""
    if len(shown) < len(m["images"]):
        note = (f'<p class="note" id="side-by-side-note">Showing {len(shown)} of {len(m["images"])} images: every '
                "captioned image, and of the scene-class images up to the --report_examples per class (wrong "
                "answers first); every answer is in metrics.json.</p>")
    ref_head = "<th>references 参考描述</th>" if with_refs else ""
    return (note + f'<table class="side" id="side-by-side"><tr><th>image 图像</th>{ref_head}{head}</tr>'
            + "".join(body) + "</table>")


def _anchor_table(m: dict, task: str) -> str:
    a = m.get("anchors")
    if not a or a["task"] != task:
        return ""
    runs = m["models"]
    head = "".join(f"<th>{_e(r['label'])} (中文提示 Chinese prompts)</th>" for r in runs)
    body = []
    for row in a["rows"]:
        cells = "".join(f'<td class="num">{v:.2f}%</td>' if v is not None else '<td class="num">—</td>'
                        for v in (row["ours"][r["label"]] for r in runs))
        body.append(f"<tr><th>{_e(a['benchmark'])} · {_e(row['name'])}</th>"
                    f'<td class="num theirs">{row["value"]:.2f}%</td>{cells}</tr>')
    n, what = {"vqa": (m["n_questions"], "questions"), "grounding": ((m["models"][0].get("grounding") or {}).get("n"),
                                                                  "referring expressions")}.get(task, (len(m["images"]), "images"))
    return (f'<table class="anchor" id="anchors"><caption>参照 Anchors — {_e(a["source"])}</caption>'
            f"<tr><th>benchmark · metric</th><th>GeoChat (英文提示 English prompts)</th>{head}</tr>{''.join(body)}</table>"
            f'<p class="note" id="anchors-note">{_e(a["note_zh"])}<br>{_e(a["note_en"])} Ours: {n} {what} of '
            f"<code>{_e(Path(m['data_file']).name)}</code> ({_e(m['split'])}).</p>")


def _vqa_table(m: dict) -> str:
    runs, qtypes = m["models"], m["qtypes"]
    n_of = {q: runs[0]["vqa"]["per_type"][q]["n"] for q in qtypes}
    head = "".join(f"<th>{_e(q)}<br><span class='small'>n={n_of[q]}</span></th>" for q in qtypes)
    body = []
    for r in runs:
        v = r["vqa"]
        cells = "".join(
            f"<td class='num'>{v['per_type'][q]['accuracy'] * 100:.1f}%<br><span class='small'>"
            f"{v['per_type'][q]['correct']}/{v['per_type'][q]['n']}</span></td>" for q in qtypes)
        body.append(f"<tr><th>{_e(r['label'])}</th>{cells}<td class='num'>{v['accuracy'] * 100:.1f}%<br>"
                    f"<span class='small'>{v['correct']}/{v['n']}</span></td>"
                    f"<td class='num'>{v['average_accuracy'] * 100:.1f}%</td>"
                    f"<td class='num'>{v['parsed']}/{v['n']}</td></tr>")
    return ('<table id="vqa-accuracy"><caption>视觉问答准确率 VQA accuracy per question type</caption>'
            f"<tr><th>model</th>{head}<th>OA (all)</th><th>AA (mean of types)</th><th>answers read</th></tr>"
            + "".join(body) + "</table>")


def vqa_examples(m: dict, examples: int) -> list[dict]:
    """The questions the report shows: up to ``examples`` per type, in type order, those some
    model got wrong first (file order within each group)."""
    by_type: dict[str, list[dict]] = {}
    for q in m["questions"]:
        by_type.setdefault(q["qtype"], []).append(q)
    out = []
    for qtype in m["qtypes"]:
        qs = sorted(by_type.get(qtype, []), key=lambda q: all(a["correct"] for a in q["answers"].values()))
        out += qs[:examples]
    return out


def _vqa_examples(m: dict, thumbs: dict[str, str | None], picked: list[dict], examples: int) -> str:
    runs = m["models"]
    head = "".join(f"<th>{_e(r['label'])}</th>" for r in runs)
    body = []
    for q in picked:
        qtype = q["qtype"]
        uri = thumbs.get(q["path"])
        pic = f'<img src="{uri}" alt="{_e(q["img"])}">' if uri else '<span class="bad">(image not readable)</span>'
        cells = []
        for r in runs:
            a = q["answers"][r["label"]]
            mark = '<span class="ok">✓</span>' if a["correct"] else '<span class="bad">✗</span>'
            cells.append(f'<td>{mark} {_answer(a["answer"])}<div class="small">→ '
                         f'{_e(a["normalized"] if a["normalized"] is not None else "unparsed")}</div></td>')
        body.append(f'<tr><td>{pic}<div class="small">{_e(q["img"])}</div></td><td>{_e(qtype)}</td>'
                    f'<td>{_e(q["prompt"])}</td><td>{_e(q["label"])}<div class="small">→ {_e(q.get("expected", ""))}'
                    f'</div></td>{"".join(cells)}</tr>')
    note = (f'<p class="note">Showing {len(picked)} of {len(m["questions"])} questions: up to {examples} per type, those '
            "some model got wrong first; every answer is in metrics.json.</p>")
    return (note + '<table class="vqa" id="vqa-examples"><tr><th>image 图像</th><th>type</th><th>question 问题</th>'
            f"<th>label 答案</th>{head}</tr>" + "".join(body) + "</table>")


def render_report(m: dict, thumb_size: int = 160, examples: int = 5) -> str:
    """The HTML text for a metrics dict (see evaluate.run_evaluation for its fields). ``examples``:
    questions per type, and images per class of a scene set, shown with their answers."""
    runs = m["models"]
    shown = shown_images(m, examples)
    thumbs = {im["key"]: thumbnail_data_uri(im["path"], thumb_size) for im in shown}
    questions = m.get("questions") or []
    small = max(48, thumb_size // 2)
    title = f"RemoteGLM evaluation — {m['dataset']} / {m['split']}"
    models = "".join(
        f"<li><b>{_e(r['label'])}</b>: <code>{_e(r['checkpoint'] or r.get('predictions'))}</code> ({_e(r.get('weights', ''))}, "
        f"{r['seconds']:.1f} s)</li>" for r in runs)
    gen = m["generation"]
    parts = [f'<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>{_e(title)}</title>'
             f"<style>{CSS % (FONTS, thumb_size, small)}</style></head><body>",
             f"<h1>{_e(title)}</h1>"]
    if m.get("leak"):
        lk = m["leak"]
        parts.append(f'<p class="leak" id="leak-warning">警告 WARNING: {lk["count"]} of {m["n_images"]} evaluation images '
                     f"are also in the training data ({_e(', '.join(lk['train_files']))}); these scores measure memorisation, "
                     "not generalisation.</p>")
    counted = f" · {len(questions)} questions" if questions else ""
    short_of = " and ".join(w for w, on in (("class", m.get("classes")), ("VQA", questions)) if on)
    short = f" ({short_of} answers: {gen.get('vqa_max_new_tokens') or gen['classify_max_new_tokens']})" if short_of else ""
    cap_prompt = f"; caption prompt 「{_e(gen['caption_prompt'])}」" if any(r.get("caption") for r in runs) else ""
    parts.append(
        f"<p>data: <code>{_e(m['data_file'])}</code> · split <b>{_e(m['split'])}</b> · {m['n_images']} images{counted} · "
        f"{_e(m['created'])}</p><ul>{models}</ul>"
        f'<p class="note">Greedy decoding (deterministic), max_new_tokens {gen["max_new_tokens"]}{short}, '
        f'repetition_penalty {gen["repetition_penalty"]}{cap_prompt}.</p>')
    if any(r.get("caption") for r in runs):
        parts.append("<h2>描述指标 Caption metrics</h2>" + _caption_tables(m))
    if m.get("classes") and all(r.get("classification") for r in runs):
        parts.append('<h2 id="scene">场景分类 Scene classification</h2>')
        parts.append(f'<p class="note">Prompt: 「{_e(gen.get("classify_prompt_example", ""))}」. Answers are mapped to a '
                     "class by exact name, synonym, or a class name contained in the answer; anything else counts "
                     "as wrong (column “unparsed”).</p>")
        parts.append(_accuracy_table(m))
        parts.append(_anchor_table(m, "classify"))
        parts.append("<h3>各类准确率 Per-class accuracy</h3>" + per_class_svg(m))
        parts.append("".join(_confusion(r) for r in runs))
    if questions and all(r.get("vqa") for r in runs):
        picked = vqa_examples(m, examples)
        qthumbs = {p: thumbnail_data_uri(p, small) for p in dict.fromkeys(q["path"] for q in picked)}
        parts.append('<h2 id="vqa">视觉问答 Visual question answering</h2>')
        parts.append(f'<p class="note">Example question: 「{_e(gen.get("vqa_prompt_example") or "")}」. '
                     f'{_e(m["metric_notes"].get("vqa", ""))}. Details: remoteglm/eval/normalize.py.</p>')
        parts.append(_vqa_table(m))
        parts.append(_anchor_table(m, "vqa"))
        parts.append("<h3>问答示例 Examples</h3>" + _vqa_examples(m, qthumbs, picked, examples))
    parts.append(grounding_section(m, thumb_size, examples, _anchor_table(m, "grounding")))
    if shown:
        parts.append("<h2>逐图对照 Side by side</h2>" + _side_by_side(m, thumbs, shown))
    parts.append("</body></html>\n")
    return "".join(parts)
