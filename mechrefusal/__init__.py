"""mechrefusal: the mechanistic study of refusal in language models, and fail-closed alignment."""

from mechrefusal import data
from mechrefusal.core.errors import (
    ArgumentTypeError,
    CheckpointError,
    DataError,
    DeviceError,
    EndpointError,
    FetchError,
    MechrefusalError,
    MissingFileError,
    ModelLoadError,
    SettingError,
)
from mechrefusal.directions import FINDERS, Direction, DirectionSet, find_direction
from mechrefusal.interventions import Ablate, Add
from mechrefusal.interventions.orthogonalize import orthogonalize
from mechrefusal.measure.activations import MeanActivations, mean_activations
from mechrefusal.measure.evaluation import refusal_rate
from mechrefusal.measure.generation import generate
from mechrefusal.measure.judges import JUDGES, Judge, SubstringJudge, Verdict
from mechrefusal.measure.metrics import first_token_kl, refusal_score
from mechrefusal.models import DEFAULT_MODEL, Batch, Model, load

__all__ = [
    "DEFAULT_MODEL",
    "FINDERS",
    "JUDGES",
    "Ablate",
    "Add",
    "ArgumentTypeError",
    "Batch",
    "CheckpointError",
    "DataError",
    "DeviceError",
    "Direction",
    "DirectionSet",
    "EndpointError",
    "FetchError",
    "Judge",
    "MeanActivations",
    "MechrefusalError",
    "MissingFileError",
    "Model",
    "ModelLoadError",
    "SettingError",
    "SubstringJudge",
    "Verdict",
    "data",
    "find_direction",
    "first_token_kl",
    "generate",
    "load",
    "mean_activations",
    "orthogonalize",
    "analyze",
    "refusal_rate",
    "refusal_score",
]


def __getattr__(name: str):
    # `mechrefusal.analyze` is a callable module (see mechrefusal/analyze.py); importing it lazily keeps
    # `python -m mechrefusal.analyze` from finding it already imported.
    if name == "analyze":
        import mechrefusal.analyze

        return mechrefusal.analyze
    raise AttributeError(f"module 'mechrefusal' has no attribute {name!r}")
