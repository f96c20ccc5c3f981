#!/usr/bin/env python
"""Chat with VisualGLM-6B about an image in the terminal (thin wrapper: remoteglm/serve/cli.py).

    python cli_demo.py --from_pretrained DIR [--tokenizer ice_text.model] [--image PATH] [--prompt TEXT] [--english] [--quant 4|8]
"""

import sys

from remoteglm.serve.cli import main

if __name__ == "__main__":
    sys.exit(main())
