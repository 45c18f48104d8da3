"""`python -m mechrefusal.analyze [CKPT] [--out DIR]`: find the refusal direction and measure its effect.

Runs DIM + selection on the bundled train/val splits, then measures on the held-out test splits the
judged refusal rate and mean refusal score of harmful and harmless prompts, with and without the
selected direction ablated. Writes ``DIR/report.json`` and ``DIR/direction.safetensors`` and prints a
summary. The same job from Python: ``mechrefusal.analyze.run(AnalyzeSettings(...))``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mechrefusal import data
from mechrefusal.cli import add_settings_arguments
from mechrefusal.directions import DirectionSet, SelectionFilters, find_direction
from mechrefusal.generation import generate
from mechrefusal.interventions import Ablate
from mechrefusal.judges import SubstringJudge
from mechrefusal.metrics import first_token_kl, refusal_score
from mechrefusal.models import load
from mechrefusal.precision import autocast
from mechrefusal.provenance import versions


@dataclass
class AnalyzeSettings:
    """Settings of the analysis job (the CLI flags have the same names)."""

    model: str | None = None
    """Model spec for `mechrefusal.load` (default: the embedded SmolLM2-135M-Instruct)."""
    out: str = "reports/analysis"
    """Directory for report.json and direction.safetensors."""
    n_train: int = 128
    """Prompts per set (harmful, harmless) for the difference in means, from the train splits."""
    n_val: int = 16
    """Prompts per set for scoring the candidates, from the val splits."""
    n_test: int = 64
    """Prompts per set for the held-out measurements, from the test splits."""
    max_new_tokens: int = 32
    """Tokens generated per prompt for the judged refusal rate."""
    max_kl: float = 0.1
    """Selection filter: largest first-token KL on harmless prompts when the candidate is ablated."""
    full_grid: bool = False
    """Score induce for every candidate, not only in bypass order until one passes the filters."""
    dtype: str = "bfloat16"
    """Compute dtype of the candidate sweep and of generation: bfloat16 (autocast) or float32."""
    batch_size: int = 16
    """Prompts per forward pass."""


def run(settings: AnalyzeSettings, *, progress: bool = True) -> dict:
    """Run the analysis, write the report, and return it as a dict."""
    started = time.perf_counter()
    model = load(settings.model)
    harmful_test = data.load("harmful", "test")[: settings.n_test]
    harmless_test = data.load("harmless", "test")[: settings.n_test]
    direction = find_direction(
        model, data.load("harmful", "train")[: settings.n_train], data.load("harmless", "train")[: settings.n_train],
        harmful_val=data.load("harmful", "val"), harmless_val=data.load("harmless", "val"), n_val=settings.n_val,
        filters=SelectionFilters(max_kl=settings.max_kl), full_grid=settings.full_grid, sweep_dtype=settings.dtype,
        batch_size=settings.batch_size, progress=progress)
    ablation = Ablate(direction)
    judge = SubstringJudge()
    measurements = {}
    for condition, intervention in (("baseline", None), ("ablated", ablation)):
        for name, prompts in (("harmful", harmful_test), ("harmless", harmless_test)):
            with autocast(model, settings.dtype):
                completions = generate(model, prompts, max_new_tokens=settings.max_new_tokens,
                                       intervention=intervention, batch_size=settings.batch_size, progress=progress)
            verdicts = judge.judge(prompts, completions)
            measurements[f"{condition}/{name}"] = {
                "refusal_rate": sum(v.refused for v in verdicts) / len(verdicts),
                "refusal_score": refusal_score(model, prompts, intervention=intervention,
                                               batch_size=settings.batch_size).mean().item(),
                "examples": [{"prompt": p, "completion": c} for p, c in list(zip(prompts, completions))[:3]],
            }
    kl = first_token_kl(model, harmless_test, ablation, batch_size=settings.batch_size).mean().item()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    DirectionSet([direction]).save(out / "direction.safetensors")
    report = {
        "model": model.spec, "settings": asdict(settings),
        "direction": {"layer": direction.layer, "position": direction.position, "norm": direction.vector.norm().item(),
                      **{key: direction.provenance[key] for key in ("bypass", "induce", "kl", "passed_filters",
                                                                   "massive_dims_zeroed")}},
        "test": measurements, "first_token_kl_harmless_ablated": kl,
        "selection_scores": direction.provenance["scores"], "versions": versions(),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def summary(report: dict) -> str:
    d = report["direction"]
    lines = [f"model {report['model']}: selected DIM direction at layer {d['layer']}, position {d['position']} "
             f"(bypass {d['bypass']:+.2f}, induce {d['induce']:+.2f}, KL {d['kl']:.3f}, "
             f"{'passed' if d['passed_filters'] else 'FAILED'} the selection filters)",
             f"{'test split':<22}{'refusal rate':>14}{'refusal score':>15}"]
    for key, value in report["test"].items():
        lines.append(f"{key:<22}{value['refusal_rate']:>14.1%}{value['refusal_score']:>+15.3f}")
    lines.append(f"first-token KL on harmless prompts with the direction ablated: "
                 f"{report['first_token_kl_harmless_ablated']:.3f}")
    lines.append(f"wall time {report['wall_time_s']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mechrefusal.analyze", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(parser, AnalyzeSettings)
    args = vars(parser.parse_args(argv))
    report = run(AnalyzeSettings(**args))
    print(summary(report))
    print(f"report: {Path(args['out']) / 'report.json'}")


if __name__ == "__main__":
    main()
