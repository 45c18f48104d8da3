"""Training: model-specific data, standard safety fine-tuning, progressive (fail-closed) ablation
training and its baselines, with round checkpoints that `mechrefusal.load` reads back."""

from mechrefusal.train.job import run
from mechrefusal.train.settings import METHODS, SearchSettings, TrainSettings

__all__ = ["METHODS", "SearchSettings", "TrainSettings", "run"]
