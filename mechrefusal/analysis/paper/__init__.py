"""The paper's figures: one builder per figure, each taking plain inputs (the dicts the jobs' output
directories hold, read with `inputs`, or a loaded model, directions and prompts where activations are
needed) and returning a `PaperFigure` (the plotly figure, its caption and its key numbers);
`write_figure` writes it into a figures directory. ``analyses/fig_*.py`` are thin command-line wrappers."""

from mechrefusal.analysis.paper.mechanisms import (
    ablation_comparison,
    attack_projections,
    direction_cosines,
    fail_open,
    independence,
)
from mechrefusal.analysis.paper.output import PaperFigure, write_figure
from mechrefusal.analysis.paper.tables import overrefusal_utility, robustness
from mechrefusal.analysis.paper.training import rounds_summary, training_cost, training_curves

__all__ = [
    "PaperFigure",
    "ablation_comparison",
    "attack_projections",
    "direction_cosines",
    "fail_open",
    "independence",
    "overrefusal_utility",
    "robustness",
    "rounds_summary",
    "training_cost",
    "training_curves",
    "write_figure",
]
