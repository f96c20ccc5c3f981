"""One flag style: every option is declared --with_underscores and also taken as --with-dashes."""

import pytest

from remoteglm.options import Parser
from remoteglm.train.options import build_parser


def test_every_option_takes_both_spellings():
    p = Parser(prog="x")
    p.add_argument("--max_queue", type=int, default=16)
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("rest", nargs="*")
    a = p.parse_args(["--max-queue", "3", "--dry-run"])
    assert a.max_queue == 3 and a.dry_run
    assert p.parse_args(["--max-queue=4"]).max_queue == 4 and p.parse_args(["--max_queue=5"]).max_queue == 5
    assert p.parse_args(["--", "--max-queue"]).rest == ["--max-queue"]  # after "--" nothing is an option
    with pytest.raises(SystemExit):
        p.parse_args(["--max-queues", "3"])  # no such option in either spelling


def test_the_finetune_command_reads_either_spelling_and_declares_one(capsys):
    a = build_parser().parse_args(["--from-pretrained", "m", "--train-data", "a.json", "--trust-checkpoint",
                                   "--lora-rank", "4"])
    assert (a.from_pretrained, a.train_data, a.trust_checkpoint, a.lora_rank) == ("m", ["a.json"], True, 4)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    shown = capsys.readouterr().out
    assert "--trust_checkpoint" in shown and "--from_pretrained" in shown and "--trust-checkpoint" not in shown
