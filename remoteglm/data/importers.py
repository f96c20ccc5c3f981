"""Command line of the importers for the sets users already have, written as fine-tune records:
``python -m remoteglm.data.importers {rsvqa,scenes,detection,vrsbench,scene,rsgpt,rsgpt4v} --help``.

* ``rsvqa``: RSVQA-LR / RSVQA-HR (``rsvqa.py`` reads them, ``rsvqa_records.py`` writes the VQA
  records; questions through the cached translator, answers by rule).
* ``scenes``: folder-per-class scene sets (``scenes.py``; classification records, no LLM).
* ``detection``: detection and referring sets with boxes (``grounding_import.py``; grounding
  records by rule; with ``--base_url`` DIOR-RSVG's English expressions through the cached
  translator, ``grounding_translate.py``).
* ``vrsbench``: VRSBench's referring files (``vrsbench.py``; refer records, boxes from its 0-100
  numbers to pixels; with ``--base_url`` the English expressions through the cached translator).
* ``scene``: one annotated scene (GeoTIFF/COG/JPEG 2000; boxes as GeoJSON or pixel boxes;
  ``scene_tiles.py``): tiles and grounding records with spatial splits (no test area in a train tile).
* ``rsgpt`` / ``rsgpt4v``: RSGPT's RSICap (train) and RSIEval (test: captions + VQA the evaluation
  scores) and RS-GPT4V's LLaVA-style instruction files (``rsgpt.py``, ``rsgpt4v.py``; texts through the
  cached translator sentence by sentence, ``paragraphs.py``).

All write atomically, skip a rebuild when nothing changed, give each image the split its content
has in the other builders' outputs (:mod:`~remoteglm.data.splits`), and report bad layouts as one
RemoteGLMError line.
"""

from __future__ import annotations

from remoteglm.options import Parser

import argparse
import shlex
import sys
from pathlib import Path

from ..errors import RemoteGLMError, cli_entry
from ..stretch import STRETCHES
from .cli import endpoint_configs
from .cli import parser as caption_parser
from .glossary import SCENE_SETS
from .grounding_import import FORMATS, DetectionConfig, import_detection
from .grounding_translate import ExpressionConfig
from .import_summary import print_import_summary
from .llm_keys import redact
from .paragraphs import TextConfig
from .rsgpt import PARTS as RSGPT_PARTS, RSGPTConfig, import_rsgpt
from .rsgpt4v import SCALES, RSGPT4VConfig, import_rsgpt4v
from .rsvqa_records import RSVQAConfig, import_rsvqa
from .scene_tiles import BLOCK_TILES, OVERLAP, TILE, SceneTilesConfig, import_scene
from .scenes import ScenesConfig, import_scenes
from .translate import TranslateConfig
from .vrsbench import VRSBenchConfig, import_vrsbench

EPILOG = """examples:
  # RSVQA-LR / RSVQA-HR: questions translated (cached, resumable), answers mapped by rule
  python -m remoteglm.data.importers rsvqa --root data/RSVQA_LR --dry_run
  python -m remoteglm.data.importers rsvqa --root data/RSVQA_HR --base_url https://api.deepseek.com/v1 \\
      --model deepseek-chat --api_key_env DEEPSEEK_API_KEY
  # folder-per-class scene sets: no LLM needed
  python -m remoteglm.data.importers scenes --root data/AID
  python -m remoteglm.data.importers scenes --root data/NWPU-RESISC45 --split_files data/resisc45
  # detection / referring sets with boxes: grounding records by rule; with --base_url DIOR-RSVG's
  # English expressions are translated (cached, resumable) and used as the refer/identify expression
  python -m remoteglm.data.importers detection --format voc --name DIOR-RSVG --annotations data/DIOR-RSVG/Annotations \
      --images data/DIOR-RSVG/JPEGImages --split_files data/DIOR-RSVG --base_url https://api.deepseek.com/v1 \
      --model deepseek-chat --api_key_env DEEPSEEK_API_KEY
  python -m remoteglm.data.importers detection --format dota --name DOTA --annotations data/DOTA/labelTxt \
      --images data/DOTA/images --split_files data/DOTA --tile 1024 --overlap 200
  # VRSBench's referring expressions (eval file -> test, train file's [refer] turns -> train)
  python -m remoteglm.data.importers vrsbench --root data/VRSBench --base_url https://api.deepseek.com/v1 \
      --model deepseek-chat --api_key_env DEEPSEEK_API_KEY
  # one annotated scene (GeoJSON or pixel boxes) -> 512 px PNG tiles and grounding records, split by area
  python -m remoteglm.data.importers scene --scene data/scenes/s2.tif --boxes data/scenes/s2_ships.geojson \
      --names data/scenes/names.json --tile 512 --overlap 64 --split_block 1024
  # RSGPT: RSICap -> train descriptions, RSIEval -> test captions + VQA (score it with python -m remoteglm.eval)
  python -m remoteglm.data.importers rsgpt --root RSGPT/dataset --base_url https://api.deepseek.com/v1 \
      --model deepseek-chat --api_key_env DEEPSEEK_API_KEY
  # RS-GPT4V's LLaVA-style files (boxes [x1, y1, x2, y2] in fractions of the image)
  python -m remoteglm.data.importers rsgpt4v --train data/RS-GPT4V/train.json --test data/RS-GPT4V/test.json \
      --images data/RS-GPT4V/images --boxes normalized --dry_run

All rebuild nothing when nothing changed; a bad layout is one error line."""


def _llm_parent() -> argparse.ArgumentParser:
    """The translation CLI's "LLM endpoint" options, the same actions (one definition, in cli.py)."""
    parent = Parser(add_help=False)
    group = parent.add_argument_group("LLM endpoint")
    for g in caption_parser()._action_groups:
        if g.title == "LLM endpoint":
            for action in g._group_actions:
                group._add_action(action)
    return parent


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m remoteglm.data.importers",
        description="Import RSVQA-LR/HR, folder-per-class scene sets (AID, NWPU-RESISC45, UCM, WHU-RS19) and detection "
        "sets with boxes (DIOR, DIOR-RSVG, DOTA, COCO-style) and VRSBench's referring files as Chinese "
        "VisualGLM fine-tune files.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{rsvqa,scenes,detection,vrsbench,scene,rsgpt,rsgpt4v}")
    v = sub.add_parser("rsvqa", parents=[_llm_parent()], help="RSVQA-LR / RSVQA-HR JSON files -> VQA records",
                       description="RSVQA-LR / RSVQA-HR -> Chinese VQA fine-tune files: questions through the cached "
                       "translator, yes/no, numbers, areas and rural/urban answers by rule.")
    v.add_argument("--root", type=Path, required=True, help="folder with <prefix>_split_<split>_{questions,answers,"
                   "images}.json")
    v.add_argument("--images", type=Path, default=None,
                   help="image folder (default: Images_LR/ for LR, Data/ for HR, beside the JSON files); only checked")
    v.add_argument("--name", default=None, help="RSVQA-LR or RSVQA-HR (default: from the file prefix LR_ / USGS_)")
    v.add_argument("--out_dir", type=Path, default=None, help="output folder (default: data/<name>_zh)")
    v.add_argument("--limit", type=int, default=None, help="only the first N images of each split (a trial run)")
    v.add_argument("--dry_run", action="store_true", help="estimate calls and tokens; call nothing, write nothing")
    v.add_argument("--no_progress", action="store_true", help="no progress bar")
    s = sub.add_parser("scenes", help="folder-per-class scene sets -> classification records",
                       description="A folder-per-class scene set (AID, NWPU-RESISC45, UCM, WHU-RS19) -> scene-"
                       "classification fine-tune files with the one classification prompt; no LLM.")
    s.add_argument("--root", type=Path, required=True, help="folder holding one folder per class")
    s.add_argument("--name", default=None, help=f"{', '.join(SCENE_SETS)} (default: from the path or the class folders)")
    s.add_argument("--out_dir", type=Path, default=None, help="output folder (default: data/<name>_classify)")
    s.add_argument("--split_files", type=Path, default=None,
                   help="folder with the official split lists (<name>-train.txt, -val.txt, -test.txt); default: looked "
                   "for beside --root and in its parent")
    s.add_argument("--seeded_split", action="store_true", help="ignore split lists: seeded 80/10/10 split per class")
    s.add_argument("--val", type=float, default=0.1, help="val fraction of the seeded split (default: %(default)s)")
    s.add_argument("--test", type=float, default=0.1, help="test fraction of the seeded split (default: %(default)s)")
    d = sub.add_parser("detection", parents=[_llm_parent()],
                       help="detection / referring sets with boxes -> grounding records",
                       description="A detection or referring set (DIOR and DIOR-RSVG VOC XML, DOTA labelTxt, COCO-style "
                       "JSON) -> Chinese grounding fine-tune files <name>_<split>.json (refer, identify, detect, count, "
                       "grounded tasks by rule). The official splits are kept. DIOR-RSVG's English descriptions "
                       "are kept in each refer/identify record's 'expression_en'; with --base_url they are translated "
                       "(cached, checked: the category named, no number or position invented) and the translation is "
                       "the refer/identify expression; one still failing keeps the rule-built Chinese expression and "
                       "is listed in failures.json (a rerun asks only for those).")
    d.set_defaults(base_url=None)  # translating is asked for: no --base_url, the rule-built expressions only
    next(x for x in d._actions if x.dest == "base_url").help = (
        "OpenAI-compatible base URL, usually ending in /v1: translate DIOR-RSVG's English descriptions there "
        "(default: none, the rule-built Chinese expressions only)")
    d.add_argument("--no_translate", action="store_true", help="do not translate the English descriptions, even "
                   "with --base_url")
    d.add_argument("--dry_run", action="store_true", help="estimate calls and tokens; call nothing, write nothing")
    d.add_argument("--no_progress", action="store_true", help="no progress bar")
    d.add_argument("--format", choices=FORMATS, required=True, help="voc: one XML per image (DIOR, DIOR-RSVG); dota: "
                   "one labelTxt per image; coco: one COCO-style JSON per split")
    d.add_argument("--annotations", type=Path, required=True,
                   help="folder of the annotation files (coco: of the split files *train.json, *val.json, *test.json)")
    d.add_argument("--images", type=Path, required=True, help="folder of the images")
    d.add_argument("--name", required=True, help="the set's name: output files <name>_train.json ...")
    d.add_argument("--split_files", type=Path, default=None, help="voc/dota: folder with the official split lists "
                   "train.txt, val.txt, test.txt (one image id, the file stem, a line); default: the folder holding "
                   "--annotations")
    d.add_argument("--out_dir", type=Path, default=None, help="output folder (default: data/<name>_grounding)")
    d.add_argument("--tile", type=int, default=None, metavar="SIZE", help="cut images larger than SIZE x SIZE into "
                   "tiles (written under <out_dir>/tiles/, boxes clipped and moved; objects mostly outside a tile "
                   "dropped there)")
    d.add_argument("--overlap", type=int, default=200, metavar="N", help="overlap of neighbouring tiles in pixels "
                   "(default: %(default)s)")
    d.add_argument("--names", type=Path, default=None, help="JSON file {category: Chinese name} for categories the "
                   "glossary lacks")
    r = _vrsbench_parser(sub)
    g = _scene_parser(sub)
    rg, r4 = _rsgpt_parsers(sub)
    for sp in (v, s, d, r, g, rg, r4):
        sp.add_argument("--splits", type=Path, default=None,
                        help="split registry shared with the other builders: one split per image content across all "
                        "of them (default: splits.json beside the output folder, i.e. data/splits.json)")
    return p


def _vrsbench_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser("vrsbench", parents=[_llm_parent()], help="VRSBench's referring files -> refer records",
                       description="VRSBench (github.com/lx709/VRSBench, huggingface.co/datasets/xiang709/VRSBench) "
                       "-> Chinese refer records vrsbench_refer_<split>.json: VRSBench_EVAL_referring.json is the test "
                       "split, the [refer] turns of VRSBench_train.json the train split. Boxes, given in hundredths "
                       "of the image's width and height ({<x1><y1><x2><y2>}), become pixels of the image (size read "
                       "from its header). The English expression is kept in 'expression_en'; with --base_url it is "
                       "translated (cached, checked; an eval expression must name its obj_cls) and the prompt says "
                       "it in Chinese, else the prompt quotes the English. A rerun with nothing changed writes nothing.")
    r.set_defaults(base_url=None)
    next(x for x in r._actions if x.dest == "base_url").help = (
        "OpenAI-compatible base URL, usually ending in /v1: translate the English expressions there (default: "
        "none, the records keep English)")
    r.add_argument("--root", type=Path, required=True, help="the VRSBench folder: VRSBench_EVAL_referring.json, "
                   "VRSBench_train.json, Images_val/, Images_train/ (as unpacked)")
    r.add_argument("--only", choices=("eval", "train"), default=None, help="import that file alone (default: both)")
    r.add_argument("--eval_file", type=Path, default=None, help="default: ROOT/VRSBench_EVAL_referring.json")
    r.add_argument("--train_file", type=Path, default=None, help="default: ROOT/VRSBench_train.json")
    r.add_argument("--images_val", type=Path, default=None, help="images of the eval file (default: ROOT/Images_val, "
                   "or the Images_val folder inside it)")
    r.add_argument("--images_train", type=Path, default=None, help="images of the train file (default: "
                   "ROOT/Images_train, or the Images_train folder inside it)")
    r.add_argument("--out_dir", type=Path, default=None, help="output folder (default: data/vrsbench)")
    r.add_argument("--skip_bad_boxes", action="store_true", help="leave out entries whose box is empty (no width or "
                   "height) or outside its image, and count them (default: such a box is an error)")
    r.add_argument("--no_translate", action="store_true", help="do not translate, even with --base_url")
    r.add_argument("--dry_run", action="store_true", help="estimate calls and tokens; call nothing, write nothing")
    r.add_argument("--no_progress", action="store_true", help="no progress bar")
    return r


def _scene_parser(sub) -> argparse.ArgumentParser:
    g = sub.add_parser("scene", help="an annotated scene (GeoTIFF, COG, JPEG 2000) -> tiles and grounding records",
                       description="One scene and its boxes -> 8-bit PNG tiles under <out_dir>/tiles/ and Chinese "
                       "grounding fine-tune files <name>_<split>.json (refer, identify, detect, count, grounded tasks "
                       "by rule; boxes on the tile). Splits are spatial: the scene is cut into blocks of about "
                       "--split_block pixels, each block train, val or test (seeded), and a tile reaching into blocks "
                       "of two splits is left out, so no val/test pixel is in a train tile. The tiles are registered "
                       "in the split registry. A rerun with nothing changed writes nothing.")
    g.add_argument("--scene", type=Path, required=True, help="the scene: GeoTIFF, COG or JPEG 2000")
    g.add_argument("--boxes", type=Path, required=True, help="its boxes: a GeoJSON FeatureCollection (polygons or "
                   "other geometries -> their bounding boxes; CRS from its 'crs' member, else WGS84 lon/lat; "
                   "property 'category') or a JSON list [{\"box\": [x1, y1, x2, y2], \"category\": ...}] in pixels")
    g.add_argument("--names", type=Path, default=None, help="JSON file {category: Chinese name} for categories the "
                   "glossary lacks")
    g.add_argument("--name", default=None, help="output files <name>_train.json ... (default: the scene's file name)")
    g.add_argument("--out_dir", type=Path, default=None, help="output folder (default: data/<name>_grounding)")
    g.add_argument("--tile", type=int, default=TILE, metavar="SIZE", help="tile size in scene pixels "
                   "(default: %(default)s)")
    g.add_argument("--overlap", type=int, default=OVERLAP, metavar="N", help="overlap of neighbouring tiles in pixels "
                   "(default: %(default)s)")
    g.add_argument("--bands", default=None, help="1-based bands for red,green,blue, e.g. 3,2,1, or one band (grey) "
                   "(default: from the band descriptions, else the first three)")
    g.add_argument("--stretch", choices=STRETCHES, default="percentile", help="to 8-bit: the 2-98 %% percentiles or "
                   "min/max of the scene (default: %(default)s)")
    g.add_argument("--split_block", type=int, default=None, metavar="PIXELS", help="side of the split blocks "
                   f"(default: {BLOCK_TILES} tiles); larger blocks leave fewer tiles out at split boundaries")
    g.add_argument("--val", type=float, default=0.1, help="fraction of the blocks for val (default: %(default)s)")
    g.add_argument("--test", type=float, default=0.1, help="fraction of the blocks for test (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the blocks' splits (default: %(default)s)")
    g.add_argument("--skip_bad_boxes", action="store_true", help="leave out features with no area (points, lines) "
                   "or wholly outside the scene, and count them (default: such a feature is an error)")
    return g


def _rsgpt_parsers(sub) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    g = sub.add_parser("rsgpt", parents=[_llm_parent()], help="RSGPT's RSICap / RSIEval -> description, caption "
                       "and VQA records", description="RSGPT (github.com/Lavender105/RSGPT, dataset/ as of commit "
                       "d3fd7fc) -> Chinese records: RSICap/captions.json -> rsicap_train.json (detailed descriptions), "
                       "RSIEval/annotations.json -> rsieval_test.json (captions with references, VQA: yes/no, counts "
                       "and rural/urban answers by rule and scored by python -m remoteglm.eval, other answers "
                       "translated as task vqa_open). Texts are translated sentence by sentence (cached, checked).")
    g.add_argument("--root", type=Path, required=True, help="RSGPT's dataset/ folder: RSICap/{captions.json,images/}, "
                   "RSIEval/{annotations.json,images/}")
    g.add_argument("--only", choices=tuple(RSGPT_PARTS), default=None, help="import that part alone (default: both)")
    g.add_argument("--out_dir", type=Path, default=None, help="output folder (default: data/rsgpt)")
    g.add_argument("--seed", type=int, default=42, help="seed of the description prompt per image (default: 42)")
    r4 = sub.add_parser("rsgpt4v", parents=[_llm_parent()], help="RS-GPT4V's LLaVA-style instruction files -> "
                        "records", description="RS-GPT4V (arXiv:2406.12479; its files are not published in a "
                        "repository, so LLaVA-1.5's layout is read: [{id, image, conversations: [{from: human|gpt, "
                        "value}]}], JSON or JSON Lines) -> Chinese records rsgpt4v_{train,test}.json: the last turn "
                        "is prompt/label, earlier turns history; boxes [x1, y1, x2, y2] in the texts become <box> "
                        "markers with pixel boxes. Texts are translated sentence by sentence (cached, checked).")
    r4.add_argument("--train", type=Path, nargs="+", default=[], help="files of the train split")
    r4.add_argument("--test", type=Path, nargs="+", default=[], help="files of the test split")
    r4.add_argument("--images", type=Path, required=True, help="the folder the files' image paths start in")
    r4.add_argument("--boxes", choices=SCALES, default=None, help="the scale of the box numbers in the texts "
                    "(RS-GPT4V does not publish it): normalized = fractions of width/height (LLaVA-1.5), per_mille = "
                    "0-1000, pixels; needed only when a text holds a box")
    r4.add_argument("--task", default="instruction", help="task of a single-turn record without boxes (default: "
                    "%(default)s; several turns: conversation)")
    r4.add_argument("--out_dir", type=Path, default=None, help="output folder (default: data/rsgpt4v)")
    for sp in (g, r4):
        sp.add_argument("--dry_run", action="store_true", help="estimate calls and tokens; call nothing, write nothing")
        sp.add_argument("--no_progress", action="store_true", help="no progress bar")
    return g, r4


def _texts(a: argparse.Namespace) -> TextConfig:
    llm, translate = endpoint_configs(a)
    return TextConfig(llm, translate, a.cache, a.dry_run, not a.no_progress)


def _expressions(a: argparse.Namespace) -> ExpressionConfig:
    llm, translate = endpoint_configs(a) if a.base_url and not a.no_translate else (None, None)
    return ExpressionConfig(llm, translate or TranslateConfig(), a.cache, a.dry_run, not a.no_progress)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    command = shlex.join(["python", "-m", "remoteglm.data.importers", *(sys.argv[1:] if argv is None else argv)])
    if a.command == "vrsbench":
        try:
            print_import_summary(import_vrsbench(VRSBenchConfig(
                a.root, a.eval_file, a.train_file, a.images_val, a.images_train, a.only, a.out_dir, a.skip_bad_boxes,
                a.splits, command, _expressions(a))))
        except RemoteGLMError as e:  # whatever a server echoed back, no key is printed
            raise RemoteGLMError(redact(str(e))) from None
        return 0
    if a.command == "detection":
        expressions = _expressions(a)
        try:
            print_import_summary(import_detection(DetectionConfig(
                a.format, a.annotations, a.images, a.name, a.split_files, a.out_dir, a.tile, a.overlap, a.names,
                a.splits, command, expressions)))
        except RemoteGLMError as e:  # whatever a server echoed back, no key is printed
            raise RemoteGLMError(redact(str(e))) from None
        return 0
    if a.command in ("rsgpt", "rsgpt4v"):
        try:
            print_import_summary(import_rsgpt(RSGPTConfig(a.root, a.only, a.out_dir, a.seed, a.splits, command,
                                                          _texts(a))) if a.command == "rsgpt" else
                                 import_rsgpt4v(RSGPT4VConfig(a.train, a.test, a.images, a.boxes, a.task, a.out_dir,
                                                              a.splits, command, _texts(a))))
        except RemoteGLMError as e:  # whatever a server echoed back, no key is printed
            raise RemoteGLMError(redact(str(e))) from None
        return 0
    if a.command == "scene":
        print_import_summary(import_scene(SceneTilesConfig(
            a.scene, a.boxes, a.name, a.out_dir, a.tile, a.overlap, a.bands, a.stretch, a.split_block, a.val, a.test,
            a.seed, a.names, a.splits, a.skip_bad_boxes, command)))
        return 0
    if a.command == "scenes":
        print_import_summary(import_scenes(ScenesConfig(a.root, a.name, a.out_dir, a.split_files, a.seeded_split,
                                                        a.val, a.test, a.splits, command)))
        return 0
    llm, translate = endpoint_configs(a)
    cfg = RSVQAConfig(
        root=a.root, images=a.images, name=a.name, out_dir=a.out_dir, cache=a.cache, llm=llm, translate=translate,
        dry_run=a.dry_run, limit=a.limit, progress=not a.no_progress, splits=a.splits, command=command)
    try:
        print_import_summary(import_rsvqa(cfg))
    except RemoteGLMError as e:  # whatever a server echoed back, no key is printed
        raise RemoteGLMError(redact(str(e))) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
