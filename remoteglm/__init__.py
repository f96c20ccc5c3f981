"""remoteglm: Chinese remote-sensing image-text data and LoRA tuning for VisualGLM-6B."""

__version__ = "0.1.0"
