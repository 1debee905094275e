"""Model adapters (VAMBA, Qwen2-VL, generic transformers video LMMs) and shared model utilities."""
