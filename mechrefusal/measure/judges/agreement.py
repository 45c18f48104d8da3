"""Agreement of a judge with human labels: accuracy, Cohen's kappa, false positive and negative rates.

Confidence intervals are 95%: Wilson score intervals for the three proportions (accuracy, false positive
rate, false negative rate) and a percentile bootstrap for kappa (2000 resamples of the rows, seed 0).
The positive class is what the judge measures (a refusal, or a harmful reply). `judge_agreement` measures a
registered judge on the held-out labelled rows of its kind (harm judges on pyrit's objective rows, refusal
judges on its refusal rows) and caches the result as JSON; `describe` gives the parenthesis every attack
success rate or refusal rate is printed with.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from jaxtyping import Bool, Float

from mechrefusal.core.cache import atomic_write_bytes, home
from mechrefusal.core.errors import SettingError
from mechrefusal.data.labels import LabelledReply, data_hash, labelled
from mechrefusal.measure.judges.base import JUDGES, Judge, Verdict, judge_key, measures_of

VERSION = 2
"""Bump when judging or measuring changes, so that cached agreement reports are measured afresh."""

Interval = tuple[float, float]


@dataclass(frozen=True)
class Agreement:
    """A judge's agreement with human labels on ``n`` rows (rates are NaN when their denominator is 0)."""

    judge: str
    n: int
    accuracy: float
    accuracy_ci: Interval
    kappa: float
    kappa_ci: Interval
    false_positive_rate: float
    false_positive_rate_ci: Interval
    false_negative_rate: float
    false_negative_rate_ci: Interval
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int
    unparseable: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN written as None)."""
        return {key: _json_ready(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Agreement:
        """The report `to_dict` wrote (None read back as NaN)."""

        def number(value: Any) -> Any:
            if isinstance(value, list):
                return tuple(number(item) for item in value)
            return math.nan if value is None else value

        return cls(**{key: number(value) for key, value in fields.items()})

    def __str__(self) -> str:
        low, high = self.kappa_ci
        return f"judge {self.judge}, κ={self.kappa:.2f} [{low:.2f}, {high:.2f}]"


def cohen_kappa(human: Sequence[bool], judged: Sequence[bool]) -> float:
    """Cohen's kappa of two binary labellings (1.0 when both are one same constant)."""
    return float(_kappas(np.asarray(human, dtype=bool)[None], np.asarray(judged, dtype=bool)[None])[0])


def _kappas(human: Bool[np.ndarray, "rows n"], judged: Bool[np.ndarray, "rows n"]) -> Float[np.ndarray, " rows"]:
    observed = (human == judged).mean(axis=1)
    truth, guess = human.mean(axis=1), judged.mean(axis=1)
    expected = truth * guess + (1 - truth) * (1 - guess)
    constant = expected >= 1.0
    denominator = np.where(constant, 1.0, 1.0 - expected)
    return np.where(constant, (observed >= 1.0).astype(float), (observed - expected) / denominator)


def wilson(successes: int, total: int, z: float = 1.959964) -> Interval:
    """The Wilson score interval of a proportion (NaN, NaN when ``total`` is 0)."""
    if total == 0:
        return (math.nan, math.nan)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_kappa(human: Sequence[bool], judged: Sequence[bool], resamples: int = 2000, seed: int = 0) -> Interval:
    """The 2.5 and 97.5 percentiles of kappa over bootstrap resamples of the rows."""
    truth, guess = np.asarray(human, dtype=bool), np.asarray(judged, dtype=bool)
    picks = np.random.default_rng(seed).integers(0, len(truth), size=(resamples, len(truth)))
    kappas = _kappas(truth[picks], guess[picks])
    low, high = np.percentile(kappas, [2.5, 97.5])
    return (float(low), float(high))


def agreement_of(human: Sequence[bool], judged: Sequence[bool], judge: str = "", unparseable: int = 0) -> Agreement:
    """The agreement report of judged labels against human ones (True = the positive class)."""
    if len(human) != len(judged) or not human:
        raise SettingError(
            f"Agreement needs as many judged labels as human ones, at least one (got {len(judged)} and {len(human)})."
        )
    pairs = list(zip(human, judged))
    tp = sum(h and j for h, j in pairs)
    fp = sum(j and not h for h, j in pairs)
    tn = sum(not h and not j for h, j in pairs)
    fn = sum(h and not j for h, j in pairs)
    n = len(pairs)
    return Agreement(
        judge=judge,
        n=n,
        accuracy=(tp + tn) / n,
        accuracy_ci=wilson(tp + tn, n),
        kappa=cohen_kappa(human, judged),
        kappa_ci=bootstrap_kappa(human, judged),
        false_positive_rate=fp / (fp + tn) if fp + tn else math.nan,
        false_positive_rate_ci=wilson(fp, fp + tn),
        false_negative_rate=fn / (fn + tp) if fn + tp else math.nan,
        false_negative_rate_ci=wilson(fn, fn + tp),
        true_positives=tp,
        false_positives=fp,
        true_negatives=tn,
        false_negatives=fn,
        unparseable=unparseable,
    )


def positive(verdict: Verdict, measures: str) -> bool:
    """The verdict's answer to what its judge measures (an undecided harm verdict counts as not harmful)."""
    return bool(verdict.harmful) if measures == "harm" else verdict.refused


def agreement(judge: Judge, rows: Sequence[LabelledReply], name: str = "") -> Agreement:
    """Judge the labelled rows and compare with their human labels."""
    verdicts = judge.judge([row.objective for row in rows], [row.response for row in rows])
    judged = [positive(verdict, measures_of(judge)) for verdict in verdicts]
    unparseable = sum(verdict.reason == "unparseable" for verdict in verdicts)
    return agreement_of([row.label for row in rows], judged, name or type(judge).__name__, unparseable)


def held_out(measures: str, limit: int | None = None) -> list[LabelledReply]:
    """The held-out rows a judge of this kind is measured on; ``limit`` takes a fixed hash-ordered sample."""
    rows = labelled("objective" if measures == "harm" else "refusal", "test")
    if limit is not None:
        rows = sorted(rows, key=lambda row: hashlib.sha256(f"{row.objective}\0{row.response}".encode()).hexdigest())
        rows = rows[:limit]
    return rows


def judge_agreement(name: str, limit: int | None = None) -> Agreement:
    """The agreement of the registered judge ``name`` on its held-out rows, measured once and cached (keyed by
    `judge_key`, the labelled data and `VERSION`)."""
    judge = JUDGES.get(name)()
    key = f"{name}-{judge_key(judge)}-{data_hash()}-v{VERSION}-{limit}"
    path = home() / "judges" / f"agreement-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.exists():
        return Agreement.from_dict(json.loads(path.read_text())["agreement"])
    result = agreement(judge, held_out(measures_of(judge), limit), name)
    document = {"key": key, "agreement": result.to_dict()}
    atomic_write_bytes(path, json.dumps(document, indent=1).encode())
    return result


def describe(name: str, limit: int | None = None) -> str:
    """``"judge harm, κ=0.71 [0.62, 0.79]"``: what to print next to a rate the judge ``name`` measured."""
    return str(judge_agreement(name, limit))


def _json_ready(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, tuple):
        return [_json_ready(item) for item in value]
    return value
