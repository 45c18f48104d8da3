"""Loading chat models into TransformerLens (`TransformerBridge`)."""

from mechrefusal.models.autocast import autocast
from mechrefusal.models.loading import DEFAULT_MODEL, load
from mechrefusal.models.model import Batch, Model, ReplyBatch, check_instructions

__all__ = ["DEFAULT_MODEL", "Batch", "Model", "ReplyBatch", "autocast", "check_instructions", "load"]
