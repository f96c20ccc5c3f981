"""What a run folder records for serving its boxes (issue 20): the settings of the box codec the
run trained with, so a server rebuilds the same codec (the session's LoRA runs, no new training)."""

import json

from remoteglm.registry import family_named


def test_a_run_records_the_box_codec_settings_it_trained_with(hf_runs):
    for family, run in hf_runs.items():
        rec = json.loads((run / "remoteglm_base.json").read_text(encoding="utf-8"))
        size = json.loads((run / "preprocessor_config.json").read_text(encoding="utf-8"))["size"]
        lo, hi = size["shortest_edge"], size["longest_edge"]  # the run used its base folder's pixel range
        fam = family_named(family)
        assert rec["box_codec"] == fam.box_codec(None, min_pixels=lo, max_pixels=hi).settings
        if family == "qwen2_5_vl":  # its boxes are pixels of the resized image: the range is what serving needs
            assert rec["box_codec"] == {"min_pixels": lo, "max_pixels": hi}
