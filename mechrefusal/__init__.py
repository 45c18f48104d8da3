"""mechrefusal: the mechanistic study of refusal in language models, and fail-closed alignment."""

from mechrefusal import data
from mechrefusal.activations import MeanActivations, mean_activations
from mechrefusal.errors import DataError, FetchError, MechrefusalError, ModelLoadError
from mechrefusal.metrics import refusal_score
from mechrefusal.models import DEFAULT_MODEL, Batch, Model, load

__all__ = [
    "DEFAULT_MODEL", "Batch", "DataError", "FetchError", "MeanActivations", "MechrefusalError", "Model",
    "ModelLoadError", "data", "load", "mean_activations", "refusal_score",
]
