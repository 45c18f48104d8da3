"""Standard safety fine-tuning: round 0 only."""

from __future__ import annotations

from mechrefusal.train.methods.base import Method


class SFT(Method):
    """Plain safety fine-tuning (round 0), with the direction search after it."""

    def last_round(self) -> int:
        return 0
