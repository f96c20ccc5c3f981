"""The one start-up of every front end (remoteglm.serve.bootstrap) on the tiny checkpoint."""

import argparse

from remoteglm.model.unpickle import checkpoints_trusted, trust_checkpoints
from remoteglm.options import add_model_args
from remoteglm.serve.bootstrap import start_engine


def parse(*argv):
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    return ap.parse_args(list(map(str, argv)))


def test_start_engine_applies_trust_picks_the_device_and_says_what_it_loaded(tiny_checkpoint, capsys):
    args = parse("--from_pretrained", tiny_checkpoint, "--device", "cpu", "--trust_checkpoint")
    old = trust_checkpoints(False)
    try:
        engine, device, memory = start_engine(args, name="tiny-x", max_new_tokens=3)
        trusted = checkpoints_trusted()
    finally:
        trust_checkpoints(old)
    assert trusted and device == "cpu" and (engine.name, engine.max_new_tokens) == ("tiny-x", 3)
    assert memory.startswith("weights ") and " on cpu" in memory
    err = capsys.readouterr().err.splitlines()
    assert err == [f"loading {tiny_checkpoint} on cpu ...", f"ChatGLM weights: {engine.quant}; {memory}"]


def test_start_engine_defaults_to_the_folder_name_and_the_machine_device(tiny_checkpoint, capsys):
    import torch

    engine, device, _ = start_engine(parse("--from_pretrained", tiny_checkpoint), progress=False)
    assert engine.name == tiny_checkpoint.resolve().name and not checkpoints_trusted()
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert capsys.readouterr().err.splitlines()[0] == f"loading {tiny_checkpoint} on {device} ..."
