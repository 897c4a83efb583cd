"""Model loading: hub and local checkpoints, the embedded Gemma-3 270M (``gguf.py``: GGUF package -> cached
safetensors) and tiny random models for tests (``loading.py``)."""
