"""Training: model-specific data, standard safety fine-tuning, progressive (fail-closed) ablation
training and its baselines, with round checkpoints that `mechrefusal.load` reads back. The method is in
docs/method.md §3-4.

Add a training method: a `Method` subclass in ``train/methods/`` with its ablation plans for harmful (and,
if any, harmless) examples, registered in ``METHODS`` (``train/methods/__init__.py``), and a test in
``tests/test_plans.py``; the job and loop stay as they are.
"""

from mechrefusal.train.job import run
from mechrefusal.train.methods import METHODS
from mechrefusal.train.settings import SearchSettings, TrainSettings

__all__ = ["METHODS", "SearchSettings", "TrainSettings", "run"]
