"""Data: English caption sets -> checked Chinese translations -> Chinese dataset and fine-tune
records, plus importers for the sets users already have. The bottom stage: it imports nothing
from model, serve, train or eval. Import names from the module that defines them.

    python translation_en2zh.py --input data/UCM_captions/dataset.json ...  # the caption pipeline (cli)
    python -m remoteglm.data.importers {rsvqa,scenes} --root DIR ...      # RSVQA, scene folders

Modules:

* the caption pipeline: ``cli`` (the command), ``pipeline`` (the rerunnable job), ``datasets``
  (caption sets read, splits), ``translate`` and ``rewrite`` (the LLM steps), ``build`` (the
  Chinese dataset and the fine-tune files), ``jobs`` (stderr lines, build stamp, failure advice);
* instruction data: ``kinds`` (kinds, --tasks / --mix), ``facts`` (what the captions say),
  ``grounding`` (the checks of every question and answer), ``phrasing`` (what the LLM phrases),
  ``tasks`` (the step), ``instructions`` (the instruction texts, defined once);
* faithfulness: ``faithful`` (the checks), ``faithful_words`` (their word lists), ``numerals``
  (numbers a text states), ``colours`` (which object a colour is said of), ``glossary`` (terms,
  class names, jieba);
* importers: ``importers`` (the command), ``rsvqa`` and ``rsvqa_records``, ``scenes``,
  ``import_summary``;
* boxes (grounding): ``annotations`` (the model-neutral box of an object and of an image, the
  readers' shared checks), one reader per format: ``voc`` (Pascal VOC XML: DIOR, DIOR-RSVG),
  ``dota`` (DOTA labelTxt), ``coco`` (COCO-style JSON); ``referring`` (referring expressions and the
  refer / identify / grounded / detect / count tasks, by rule), ``tiles`` (large images cut into
  tiles, boxes clipped and moved);
* shared: ``llm`` (the OpenAI-compatible client) and ``llm_keys`` (where a key may go),
  ``cache`` (the result cache), ``splits`` (one split per image content across builders),
  ``records`` (fine-tune records as training reads them).
"""
