"""mechrefusal: the mechanistic study of refusal in language models, and fail-closed alignment."""

from mechrefusal import data
from mechrefusal.activations import MeanActivations, mean_activations
from mechrefusal.directions import Direction, DirectionSet, find_direction
from mechrefusal.errors import DataError, FetchError, MechrefusalError, ModelLoadError
from mechrefusal.evaluation import refusal_rate
from mechrefusal.generation import generate
from mechrefusal.interventions import Ablate, Add
from mechrefusal.judges import Judge, SubstringJudge, Verdict
from mechrefusal.metrics import first_token_kl, refusal_score
from mechrefusal.models import DEFAULT_MODEL, Batch, Model, load
from mechrefusal.orthogonalize import orthogonalize

__all__ = [
    "DEFAULT_MODEL", "Ablate", "Add", "Batch", "DataError", "Direction", "DirectionSet", "FetchError", "Judge",
    "MeanActivations", "MechrefusalError", "Model", "ModelLoadError", "SubstringJudge", "Verdict", "data",
    "find_direction", "first_token_kl", "generate", "load", "mean_activations", "orthogonalize",
    "analyze", "refusal_rate", "refusal_score",
]


def __getattr__(name: str):
    # `mechrefusal.analyze` is a callable module (see mechrefusal/analyze.py); importing it lazily keeps
    # `python -m mechrefusal.analyze` from finding it already imported.
    if name == "analyze":
        import mechrefusal.analyze

        return mechrefusal.analyze
    raise AttributeError(f"module 'mechrefusal' has no attribute {name!r}")
