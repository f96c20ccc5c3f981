"""Grounding in the terminal summary and the HTML report: the referring, detect / count and
region-caption numbers per run, and thumbnails with the given boxes (green: the true answer's, and
the prompt's of a region question) and each run's predicted boxes (red) drawn on them, beside the
answers."""

from __future__ import annotations

import base64
import html
import io

TRUE_COLOR, PRED_COLOR = "#1e9b3c", "#d62728"
KIND_NAMES = {"refer": "指代定位 refer", "identify": "区域描述 identify", "grounded": "带框描述 grounded",
              "detect": "检测 detect", "count": "计数 count"}


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def grounding_summary(runs: list[dict], w: int) -> list[str]:
    """Terminal lines: refer Acc@0.5 / Acc@0.7 / mIoU / parse failures, detect / count P/R at
    IoU 0.5, region captions' BLEU-4 and CIDEr-D (char level)."""
    lines = []
    if any(r.get("grounding") for r in runs):
        n = next(r["grounding"]["n"] for r in runs if r.get("grounding"))
        lines.append(f"referring ({n} expressions): Acc@0.5, Acc@0.7, mean IoU, parse failures")
        for r in runs:
            g = r.get("grounding") or {}
            if g:
                lines.append(f"  {r['label']:<{w}} {_pct(g['acc@0.5']):>7} {_pct(g['acc@0.7']):>7} "
                             f"{g['mean_iou']:>7.3f} {g['parse_failures']:>4} ({_pct(g['parse_failure_rate'])})")
    for kind in ("detect", "count"):
        if any(kind in (r.get("detection") or {}) for r in runs):
            lines.append(f"{kind}: precision / recall at IoU 0.5, parse failures")
            for r in runs:
                d = (r.get("detection") or {}).get(kind)
                if d:
                    lines.append(f"  {r['label']:<{w}} P {_pct(d['precision']):>7} ({d['true_positives']}/{d['n_pred']})  "
                                 f"R {_pct(d['recall']):>7} ({d['true_positives']}/{d['n_true']})  {d['parse_failures']}")
    for kind in ("identify", "grounded"):
        if any(kind in (r.get("region_caption") or {}) for r in runs):
            lines.append(f"{kind}: caption scores on the text without boxes (char level)")
            for r in runs:
                c = (r.get("region_caption") or {}).get(kind)
                if c:
                    lines.append(f"  {r['label']:<{w}} BLEU-4 {c['char']['BLEU-4']:.4f}  CIDEr-D {c['char']['CIDEr-D']:.4f}")
    return lines


def boxed_thumbnail_uri(path: str, size: int, true_boxes: list, predicted: list) -> str | None:
    """A JPEG thumbnail with the true boxes (green) and the predicted ones (red) drawn on it, as a
    data: URI; None when the image cannot be read."""
    from PIL import ImageDraw

    from remoteglm.model.image import load_image

    try:
        img = load_image(path).convert("RGB")
    except Exception:  # noqa: BLE001 - a missing thumbnail must not lose a finished evaluation
        return None
    w, h = img.size
    scale = min(size / w, size / h, 1.0)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))))
    draw = ImageDraw.Draw(img)
    for boxes, color in ((true_boxes, TRUE_COLOR), (predicted, PRED_COLOR)):
        for b in boxes:
            draw.rectangle([v * scale for v in b[:4]], outline=color, width=2)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _table(runs: list[dict]) -> str:
    rows = []
    for r in runs:
        g, cells = r.get("grounding"), []
        if g:
            cells.append(f"refer Acc@0.5 {_pct(g['acc@0.5'])} · Acc@0.7 {_pct(g['acc@0.7'])} · mIoU "
                         f"{g['mean_iou']:.3f} · parse failures {g['parse_failures']}/{g['n']}")
        for kind, d in (r.get("detection") or {}).items():
            cells.append(f"{kind} P {_pct(d['precision'])} · R {_pct(d['recall'])} (IoU 0.5)")
        for kind, c in (r.get("region_caption") or {}).items():
            cells.append(f"{kind} BLEU-4 {c['char']['BLEU-4']:.4f} · CIDEr-D {c['char']['CIDEr-D']:.4f} (char)")
        rows.append(f"<tr><th>{html.escape(r['label'])} ({html.escape(r.get('family') or '')})</th>"
                    f"<td>{'<br>'.join(cells)}</td></tr>")
    return f'<table id="grounding-scores">{"".join(rows)}</table>'


def grounding_section(m: dict, thumb_size: int, examples: int, anchors_html: str) -> str:
    """The report's grounding section ("" when the data has none): scores, anchors, and for up to
    ``examples`` records per kind the thumbnail with boxes drawn, per run."""
    records, runs = m.get("grounding") or [], m["models"]
    if not records:
        return ""
    legend = (f'<p class="note" id="box-legend"><span style="color:{TRUE_COLOR}">■ 真值框/提问框 true or asked box</span> · '
              f'<span style="color:{PRED_COLOR}">■ 预测框 predicted box</span> (original-image pixels, decoded with '
              "each run's family codec).</p>")
    shown: dict[str, int] = {}
    rows = []
    for rec in records:
        if shown.get(rec["kind"], 0) >= examples:
            continue
        shown[rec["kind"]] = shown.get(rec["kind"], 0) + 1
        cells = []
        for r in runs:
            a = rec["answers"].get(r["label"], {})
            uri = boxed_thumbnail_uri(rec["path"], thumb_size, rec["true_boxes"] + rec["prompt_boxes"],
                                      a.get("boxes", []))
            img = f'<img class="boxed" src="{uri}" alt="{html.escape(rec["img"])}">' if uri else "(image unreadable)"
            iou = f" · IoU {a['iou']:.2f}" if "iou" in a else ""
            cells.append(f"<td>{img}<div>{html.escape(a.get('answer', ''))}</div>"
                         f'<div class="small">{len(a.get("boxes", []))} box(es){iou}</div></td>')
        rows.append(f"<tr><td>{html.escape(KIND_NAMES.get(rec['kind'], rec['kind']))}<br>"
                    f"{html.escape(rec['prompt'])}<br><span class=\"small\">{html.escape(rec['label'])}</span></td>"
                    f"{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(r['label'])}</th>" for r in runs)
    return ('<h2 id="grounding">定位 Grounding</h2>' + _table(runs) + anchors_html + legend
            + f'<table class="side" id="grounding-examples"><tr><th>task · prompt · label</th>{head}</tr>'
            + "".join(rows) + "</table>")
