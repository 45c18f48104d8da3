"""GGUF files dequantised once into a cached Hugging Face directory (safetensors)."""

from __future__ import annotations

from pathlib import Path

import torch

from mechrefusal.core.assets import sha256_of
from mechrefusal.core.cache import atomic_directory, home
from mechrefusal.core.errors import ModelLoadError


def gguf_to_hf_directory(gguf_file: Path, *, name: str | None = None) -> Path:
    """Return a cached HF directory holding the dequantised model and tokenizer of ``gguf_file``.

    The cache key is the file's sha256 (or ``name`` when the caller already pins the content).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = home() / "models" / (name or f"gguf-{sha256_of(gguf_file)[:16]}")
    if (target / "config.json").exists():
        return target
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    except Exception as error:  # transformers raises many types for unreadable files
        raise ModelLoadError(
            f"{gguf_file} is not a readable GGUF model ({type(error).__name__}: {error}); "
            "check that the file is complete and holds a supported architecture."
        ) from error
    # transformers marks GGUF-loaded models as quantised and refuses to save them; the weights are
    # already dequantised to float32, so drop the marker.
    model.hf_quantizer = None  # type: ignore[assignment]  # a plain attribute of the HF model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as scratch:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
    return target
