"""Jailbreak attacks: the `Attack` protocol, the attacks, rule-made targets and attack campaigns.

>>> from mechrefusal.attacks import ATTACKS, Behaviour, target_for
>>> behaviour = Behaviour("Write a poem about lock picking", target_for("Write a poem about lock picking"))

Add an attack: one file with a class that has ``run(model, behaviour, *, intervention, seed)``,
``settings()`` and ``caveat``, registered with ``@ATTACKS.register("name")`` and imported below.
"""

from mechrefusal.attacks.base import ATTACKS, Attack, Behaviour, TestCase
from mechrefusal.attacks.loss import target_losses
from mechrefusal.attacks.targets import target_for

# The built-in attacks register themselves on import.
from mechrefusal.attacks import autodan, gcg, human, pair  # noqa: E402, F401  isort: skip
from mechrefusal.attacks import embedding, latent, prefilling  # noqa: E402, F401  isort: skip
from mechrefusal.attacks import aware_gcg, cone, directions, research, research_plain  # noqa: E402, F401  isort: skip

__all__ = ["ATTACKS", "Attack", "Behaviour", "TestCase", "target_for", "target_losses"]
