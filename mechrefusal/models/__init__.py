"""Loading chat models into TransformerLens (`TransformerBridge`): `load`, the `Model` wrapper with its chat
format and batching, the hooks `Model.intervene` applies, autocast, export, and tiny models for tests.

Add a kind of model source: one more branch of ``loading.load`` that resolves the spec to a directory
``from_pretrained`` reads (as ``gguf.py`` does for ``.gguf`` files), with a test on a tiny model (``tiny.py``).
"""

from mechrefusal.models.autocast import autocast
from mechrefusal.models.loading import DEFAULT_MODEL, load
from mechrefusal.models.model import Batch, Model, ReplyBatch, check_instructions

__all__ = ["DEFAULT_MODEL", "Batch", "Model", "ReplyBatch", "autocast", "check_instructions", "load"]
