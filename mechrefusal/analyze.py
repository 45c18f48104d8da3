"""`python -m mechrefusal.analyze [CKPT] [--directions FILE] [--compare CKPT2] [--out DIR] [--finder dim]`

Analyses the refusal directions of a model: those saved with a trainer checkpoint (or read from
``--directions``) plus a fresh one found on the model (``--finder``, on the bundled train/val splits),
measured on the held-out test splits: cosines, refusal under single / pair / cumulative / full
ablation, induce scores, representational-independence shifts, per-layer DIM norm and separation,
projections, and the fail-closed summary (`mechrefusal.analysis.independence`). ``--compare`` analyses a
second model the same way and shows both side by side. Writes ``DIR/report.html`` (self-contained),
``DIR/report.json``, ``DIR/figures/*.png``, the analysed directions as safetensors and
``DIR/settings.toml``, which replays the analysis (``--config DIR/settings.toml``).

From Python or Jupyter the module itself is callable: ``mechrefusal.analyze("runs/fc/round-3")``
returns a `Report` that shows itself inline (``mechrefusal.analyze.run(AnalyzeSettings(...))`` is
the same job with a settings object).
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mechrefusal import data
from mechrefusal.analysis.independence import measure_independence
from mechrefusal.analysis.projections import layer_profile, projections
from mechrefusal.analysis.report import Report
from mechrefusal.analysis.scoreboard import scoreboard
from mechrefusal.core.cli import (
    SETTINGS_FILE,
    SettingsParser,
    add_settings_arguments,
    choice,
    parse_settings,
    registered,
    write_settings,
)
from mechrefusal.core.devices import resolve_device
from mechrefusal.core.errors import MechrefusalError, MissingFileError, SettingError
from mechrefusal.core.memory import keep_freed_memory
from mechrefusal.core.precision import DTYPES, check_dtype, hardware, resolve
from mechrefusal.core.provenance import versions
from mechrefusal.directions import FINDERS, DIMSettings, DirectionSet, RDOSettings, SelectionFilters, find_direction
from mechrefusal.interventions import Ablate
from mechrefusal.measure.evaluation import judged_completions
from mechrefusal.measure.judges import JUDGES, refusal_judge
from mechrefusal.measure.metrics import first_token_kl, refusal_score
from mechrefusal.models import load


@dataclass
class AnalyzeSettings:
    """Settings of the analysis job (the CLI flags have the same names)."""

    model: str | None = None
    """Model spec or checkpoint directory for `mechrefusal.load` (default: the embedded SmolLM2-135M-Instruct)."""
    directions: str | None = None
    """A directions .safetensors file to analyse instead of the checkpoint's saved directions."""
    compare: str | None = None
    """A second model or checkpoint, analysed the same way (its own saved directions) and shown side by side."""
    out: str = "reports/analysis"
    """Directory for report.html, report.json, figures/ and the analysed directions."""
    attacks: str | None = None
    """An attack job's output directory (python -m mechrefusal.attack --out DIR): its results become the
    report's attack section."""
    finder: str = registered("dim", FINDERS)
    """Direction finder for the fresh direction (the method of find_direction)."""
    n_train: int = 128
    """Prompts per set (harmful, harmless) for the difference in means, from the train splits."""
    n_val: int = 16
    """Prompts per set for scoring the candidates, from the val splits."""
    n_test: int = 64
    """Prompts per set for the held-out measurements, from the test splits."""
    max_new_tokens: int = 32
    """Tokens generated per prompt for the judged refusal rates."""
    judge: str = registered("substring", JUDGES)
    """Judge of the refusal rates: a registered refusal judge (substring, prefix; mechrefusal.JUDGES) or
    'package.module:Class'."""
    max_kl: float | None = None
    """Selection filter of the fresh direction: largest first-token KL on harmless prompts when the candidate
    is ablated (default: the loosest the model's saved directions were found with, else 0.1)."""
    min_induce: float | None = None
    """Selection filter of the fresh direction: smallest refusal score the candidate induces on harmless
    prompts when added (default: the loosest the model's saved directions were found with, else 0)."""
    dtype: str = choice("auto", DTYPES)
    """Compute dtype of sweeps, generation, projections and layer profiles: auto (bfloat16 autocast where bf16
    is fast on this machine, else float32), bfloat16 or float32."""
    batch_size: int = 16
    """Prompts per forward pass of the sweeps (generation batches its own way, `GENERATION_BATCH_SIZE`)."""
    device: str = "auto"
    """Device: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N."""
    dim: DIMSettings = field(default_factory=DIMSettings)
    """The DIM finder's candidate search (--dim-search, --dim-finalists, --dim-full-grid, ...)."""
    rdo: RDOSettings = field(default_factory=RDOSettings)
    """The RDO finder's losses, sizes and optimiser, with --finder rdo (--rdo-lr, ...)."""

    def __post_init__(self) -> None:
        if self.directions is not None and not Path(self.directions).is_file():
            raise MissingFileError(f"No direction file at {self.directions}.")
        if self.attacks is not None and not (Path(self.attacks) / "report.json").is_file():
            raise MissingFileError(
                f"No attack results at {self.attacks} (expected the --out DIR of mechrefusal.attack)."
            )
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise SettingError(f"--out {self.out} is a file; pass a directory.")
        check_dtype(self.dtype)
        resolve_device(self.device)
        refusal_judge(self.judge)
        FINDERS.get(self.finder)  # before a model is loaded
        if self.n_test < 2:
            raise SettingError(
                f"n_test must be at least 2 (a standard deviation needs two prompts), got {self.n_test}."
            )


def fresh_filters(given: DirectionSet | None, settings: AnalyzeSettings) -> SelectionFilters:
    """The fresh direction's filters: the loosest that the given directions were searched with (an attacker
    searches at least as loosely as the defender), with any filter the settings name instead."""
    return SelectionFilters.loosest(given, max_kl=settings.max_kl, min_induce=settings.min_induce)


def analyse_model(
    spec: str | None, settings: AnalyzeSettings, *, role: str, directions_file: str | None = None, progress: bool = True
) -> tuple[dict, DirectionSet]:
    """One model's entry of the report, and the directions it analysed (given ones first, fresh last)."""
    model = load(spec, device=settings.device)
    given = DirectionSet.load(directions_file, d_model=model.d_model) if directions_file else model.directions
    source = "file" if directions_file else "saved"
    judge = refusal_judge(settings.judge)()
    harmful_train, harmless_train = (
        data.load("harmful", "train")[: settings.n_train],
        data.load("harmless", "train")[: settings.n_train],
    )
    harmful_test, harmless_test = (
        data.load("harmful", "test")[: settings.n_test],
        data.load("harmless", "test")[: settings.n_test],
    )
    fresh = find_direction(
        model,
        harmful_train,
        harmless_train,
        method=settings.finder,
        harmful_val=data.load("harmful", "val"),
        harmless_val=data.load("harmless", "val"),
        n_val=settings.n_val,
        filters=fresh_filters(given, settings),
        sweep_dtype=settings.dtype,
        **settings.dim.options(),
        rdo_settings=settings.rdo,
        batch_size=settings.batch_size,
        progress=progress,
    )
    directions = DirectionSet([*(given or []), fresh])
    labels = [f"d{i}" for i in range(len(directions) - 1)] + ["fresh"]
    independence = measure_independence(
        model,
        directions,
        harmful_test,
        harmless_test,
        labels=labels,
        judge=judge,
        max_new_tokens=settings.max_new_tokens,
        dtype=settings.dtype,
        batch_size=settings.batch_size,
        progress=progress,
    )
    everything = Ablate(directions)
    harmless = {
        "baseline_rate": judged_completions(
            model,
            harmless_test,
            judge=judge,
            max_new_tokens=settings.max_new_tokens,
            dtype=settings.dtype,
        ).rate,
        "all_ablated_rate": judged_completions(
            model,
            harmless_test,
            intervention=everything,
            judge=judge,
            max_new_tokens=settings.max_new_tokens,
            dtype=settings.dtype,
        ).rate,
        "all_ablated_score": refusal_score(
            model, harmless_test, intervention=everything, batch_size=settings.batch_size
        )
        .mean()
        .item(),
        "kl_all_ablated": first_token_kl(model, harmless_test, everything, batch_size=settings.batch_size)
        .mean()
        .item(),
    }
    profile = layer_profile(
        model,
        harmful_train,
        harmless_train,
        harmful_test,
        harmless_test,
        position=fresh.position,
        batch_size=settings.batch_size,
        dtype=settings.dtype,
    )
    entry = {
        "role": role,
        "model": model.spec,
        "directions": [
            {
                "label": label,
                "source": "fresh" if label == "fresh" else source,
                "method": d.method,
                "layer": d.layer,
                "position": d.position,
                "norm": d.vector.norm().item(),
                "passed_filters": d.provenance.get("passed_filters"),
            }
            for label, d in zip(labels, directions)
        ],
        "independence": independence.to_dict(),
        "harmless": harmless,
        "layer_profile": profile.to_dict(),
        "projections": {
            name: projections(
                model, prompts, directions, batch_size=settings.batch_size, dtype=settings.dtype
            ).T.tolist()
            for name, prompts in (("harmful", harmful_test), ("harmless", harmless_test))
        },
        "fresh_selection": {
            key: fresh.provenance.get(key)
            for key in ("filters", "bypass", "induce", "kl", "passed_filters", "massive_dims_zeroed", "scores")
        },
    }
    return entry, directions


def run(settings: AnalyzeSettings, *, progress: bool = True) -> Report:
    """Run the analysis, write the report directory, and return the report."""
    started = time.perf_counter()
    keep_freed_memory()
    out = Path(settings.out)
    jobs = [("model", settings.model, settings.directions)]
    if settings.compare is not None:
        jobs.append(("compare", settings.compare, None))
    entries = []
    for role, spec, directions_file in jobs:
        entry, directions = analyse_model(spec, settings, role=role, directions_file=directions_file, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        directions.save(out / f"{role}_directions.safetensors")
        entries.append(entry)
    device = resolve_device(settings.device)
    attacks = (
        {
            "attacks": Report.load(settings.attacks).data["attacks"],
            "scoreboard": scoreboard([Path(settings.attacks)]).to_dict(),
        }
        if settings.attacks
        else {}
    )
    report = Report(
        {
            "models": entries,
            **attacks,
            "settings": asdict(settings),
            "versions": versions(),
            "precision": resolve(settings.dtype, device).to_dict(),
            "hardware": hardware(),
            "wall_time_s": round(time.perf_counter() - started, 1),
        }
    )
    report.save(out)
    write_settings(settings, out / SETTINGS_FILE)
    return report


def analyze(model: str | Path | None = None, *, progress: bool = True, **settings) -> Report:
    """The analysis job from Python: ``mechrefusal.analyze(ckpt, compare=..., out=..., n_test=...)``
    (keywords as in `AnalyzeSettings`; paths may be ``Path`` objects)."""
    paths = {key: str(value) for key, value in settings.items() if isinstance(value, Path)}
    return run(AnalyzeSettings(model=None if model is None else str(model), **{**settings, **paths}), progress=progress)


def main(argv: list[str] | None = None) -> None:
    parser = SettingsParser(
        prog="python -m mechrefusal.analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_settings_arguments(parser, AnalyzeSettings)
    settings = parse_settings(parser, AnalyzeSettings, argv)
    try:
        report = run(settings)
    except (MechrefusalError, ValueError) as error:
        parser.error(str(error))
    print(report.summary())
    print(*report.notes, sep="\n")
    print(f"report: {Path(settings.out) / 'report.html'}")


class _CallableModule(types.ModuleType):
    """Makes ``mechrefusal.analyze(...)`` call `analyze` while the module stays importable as usual."""

    def __call__(self, model: str | Path | None = None, **kwargs) -> Report:
        return analyze(model, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
