"""Records to and from the tools users already train with: LLaMA-Factory (``llamafactory``),
ms-swift (``swift``), Qwen's qwen-vl-finetune scripts (``qwen``), and OpenAI-style messages
(``openai``, import only). ``files`` runs one file each way; ``common`` holds what they share
(reading, checks, record <-> turns); ``box_spans`` reads a family's box text back into the
records' ``<box>`` markers. Commands: ``remoteglm export`` / ``remoteglm import_chat``."""
