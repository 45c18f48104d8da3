"""`TextClassifier`: L2-regularised logistic regression over TF-IDF word and character n-grams plus a few
explicit features, in numpy, saved as JSON (vocabulary, idf and weights; never pickled).

Fitted in its kernel (dual) form by Newton's method: with far fewer rows (hundreds) than n-gram features
(tens of thousands) each step solves an ``n x n`` system, and the fit converges in a few dozen steps.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

_WORD = re.compile(r"[a-z0-9']+")


def terms(text: str, max_chars: int = 2000) -> Counter[str]:
    """Word 1-2 grams (``w:``) and within-word character 3-5 grams (``c:``) of a text's start, lower-cased."""
    words = _WORD.findall(text[:max_chars].lower().replace("’", "'"))
    counts: Counter[str] = Counter(f"w:{word}" for word in words)
    counts.update(f"w:{a} {b}" for a, b in zip(words, words[1:]))
    for word in words:
        padded = f" {word} "
        for size in (3, 4, 5):
            counts.update(f"c:{padded[i : i + size]}" for i in range(len(padded) - size + 1))
    return counts


@dataclass
class TextClassifier:
    """Probability of the positive class from a text and its explicit features (already scaled to ~unit size)."""

    vocabulary: dict[str, int]
    idf: list[float]
    weights: list[float]
    """One weight per vocabulary term, then one per explicit feature, then the bias."""

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        extras: Sequence[Sequence[float]],
        labels: Sequence[bool],
        *,
        penalty: float = 0.01,
        min_df: int = 2,
    ) -> TextClassifier:
        """Fit on labelled texts; ``penalty`` is the L2 strength per row (larger = simpler model)."""
        counts = [terms(text) for text in texts]
        df: Counter[str] = Counter(term for count in counts for term in count)
        vocabulary = {term: i for i, term in enumerate(sorted(t for t, d in df.items() if d >= min_df))}
        idf = [0.0] * len(vocabulary)
        for term, i in vocabulary.items():
            idf[i] = math.log((1 + len(texts)) / (1 + df[term])) + 1.0
        model = cls(vocabulary, idf, [])
        design = model.design(counts, extras)
        model.weights = _fit_logistic(design, np.asarray(labels, dtype=float), penalty).tolist()
        return model

    def design(self, counts: Sequence[Counter[str]], extras: Sequence[Sequence[float]]) -> Float[np.ndarray, "n d"]:
        """Rows of l2-normalised sublinear TF-IDF, then the explicit features, then a constant 1."""
        n_extra = len(extras[0]) if extras else 0
        matrix = np.zeros((len(counts), len(self.vocabulary) + n_extra + 1))
        idf = np.asarray(self.idf)
        for row, count in enumerate(counts):
            pairs = [(self.vocabulary[t], c) for t, c in count.items() if t in self.vocabulary]
            if pairs:
                index = np.array([i for i, _ in pairs])
                values = (1.0 + np.log([c for _, c in pairs])) * idf[index]
                matrix[row, index] = values / np.linalg.norm(values)
            matrix[row, len(self.vocabulary) : -1] = extras[row]
        matrix[:, -1] = 1.0
        return matrix

    def probabilities(self, texts: Sequence[str], extras: Sequence[Sequence[float]]) -> list[float]:
        """The positive-class probability of each text."""
        if not texts:
            return []
        logits = self.design([terms(text) for text in texts], extras) @ np.asarray(self.weights)
        return (1.0 / (1.0 + np.exp(-logits))).tolist()

    def to_json(self) -> dict:
        return {"vocabulary": self.vocabulary, "idf": self.idf, "weights": self.weights}

    @classmethod
    def from_json(cls, document: dict) -> TextClassifier:
        return cls(dict(document["vocabulary"]), list(document["idf"]), list(document["weights"]))


def _fit_logistic(
    design: Float[np.ndarray, "n d"], labels: Float[np.ndarray, " n"], penalty: float, steps: int = 50
) -> Float[np.ndarray, " d"]:
    """Weights minimising mean log-loss + penalty/2 |w|^2, found as w = Xᵀa by Newton steps on a."""
    kernel = design @ design.T
    n = len(labels)
    alpha = np.zeros(n)
    for _ in range(steps):
        logits = kernel @ alpha
        probability = 1.0 / (1.0 + np.exp(-logits))
        gradient = (probability - labels) / n + penalty * alpha  # the gradient is kernel @ this
        curvature = probability * (1.0 - probability) / n
        step = np.linalg.solve(curvature[:, None] * kernel + penalty * np.eye(n), gradient)
        alpha -= step
        if np.abs(step).max() < 1e-10:
            break
    return design.T @ alpha
