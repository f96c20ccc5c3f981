"""LoRA / QLoRA fine-tuning of any model family (`python finetune_visualglm.py --help`; the same
as `remoteglm finetune`)."""

import sys

from remoteglm.train.finetune import main

if __name__ == "__main__":
    sys.exit(main(prog="finetune_visualglm.py"))
