#!/usr/bin/env python
"""Chat with VisualGLM-6B about an image in the browser (thin wrapper: remoteglm/serve/web.py).

    python web_demo.py --from_pretrained DIR [--tokenizer ice_text.model] [--quant 4|8]
                       [--host 127.0.0.1] [--port 7860] [--share] [--auth user:pass] [--max_upload_mb 20]
"""

import sys

from remoteglm.serve.web import main

if __name__ == "__main__":
    sys.exit(main())
