"""LoRA / QLoRA fine-tuning of VisualGLM-6B (see `python finetune_visualglm.py --help`)."""

import sys

from remoteglm.train.finetune import main

if __name__ == "__main__":
    sys.exit(main())
