"""`python -m mechrefusal.reproduce --preset quick|cpu|paper [--model SPEC] --out DIR [--only STAGE] [--from STAGE]`

Reproduces the paper's pipeline on one chat model: round 0 (standard safety fine-tuning), progressive
fail-closed rounds, the ReFAT and DeepRefusal baselines from the same round 0, utility and over-refusal
(`mechrefusal.measure.utility`), the analysis of the fail-closed model against round 0, jailbreak attacks
and white-box (adaptive) attacks on every method's last checkpoint, each checkpoint's robustness scoreboard
(`mechrefusal.analysis.scoreboard`), and the paper's figures (the ``analyses/fig_*.py`` scripts). Each stage writes
into ``DIR/<stage>/`` and is cached by a hash of its settings and of the stages it needs
(`mechrefusal.core.stages`): a rerun redoes only what changed, a killed run resumes (training from its
last complete round, attacks from their last finished behaviour), an attack stage re-keyed by a new attack
list keeps its cases still valid, and a damaged output is recomputed.

Presets:

* ``quick`` (the README's main job; 19-29 minutes on 2 CPU cores with fast bf16 by host, 30 in fp32): round 0 and two
  fail-closed rounds of the README's configuration, the human-template, prefilling and saved-direction attacks on 5
  HarmBench behaviours, utility and over-refusal on 32 items per set, the analysis (refusal judged on 16-token
  completions) and the figures; no baselines.
* ``cpu``: the CPU-scale reproduction in docs/results.md (hours): three rounds of fail-closed, ReFAT and
  DeepRefusal, all four prompt attacks and six white-box attacks on 10 behaviours at CPU budgets.
* ``paper``: HarmBench's attack budgets for a GPU, on 50 behaviours (completions are 512 tokens on a CUDA
  device, 64 elsewhere). Every preset trains with the README's small-model configuration (layers 10:20, DIM
  search, KL <= 0.6), whatever ``--model``.

The end of the output tells the story in one screen: whether round 0 refuses and fails open when its
direction is ablated, whether the fail-closed model keeps refusing under every single ablation and under
the attacks, and where each table and report came from.

From Python: ``mechrefusal.reproduce.run(ReproduceSettings(preset="quick", out="reports/reproduce"))``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from mechrefusal import analyze as analyze_job
from mechrefusal import attack as attack_job
from mechrefusal import data
from mechrefusal.analysis.paper.inputs import read_attacks
from mechrefusal.analysis.paper.output import one_png_session
from mechrefusal.analysis.report import ModelResult, Report, chromium_path
from mechrefusal.analysis.scoreboard import Scoreboard, scoreboard
from mechrefusal.core.cli import SettingsParser, add_settings_arguments, aliased, choice, parse_settings
from mechrefusal.core.devices import resolve_device
from mechrefusal.core.errors import MechrefusalError, MissingFileError, SettingError
from mechrefusal.core.memory import keep_freed_memory
from mechrefusal.core.precision import DTYPES, check_dtype, resolve
from mechrefusal.core.stages import Stage, StageContext, StageRecord, run_stages
from mechrefusal.measure.utility import local_tasks_digest, measure_utility
from mechrefusal.models import load
from mechrefusal.train import TrainSettings
from mechrefusal.train import run as train
from mechrefusal.train.reference import ReferenceLogits
from mechrefusal.train.settings import SearchSettings

PRESETS = ("quick", "cpu", "paper")
ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
"""The repository's ``analyses/`` folder of scripts (present in a checkout, not in an installed wheel)."""


@dataclass
class ReproduceSettings:
    """Settings of the reproduce job (the CLI flags have the same names)."""

    preset: str = choice("quick", PRESETS)
    """quick (README, 19-30 min on 2 CPU cores), cpu (the CPU-scale reproduction, hours) or paper (GPU budgets)."""
    model: str | None = None
    """Chat model spec for `mechrefusal.load` (default: the embedded SmolLM2-135M-Instruct)."""
    out: str = "reports/reproduce"
    """Directory of the stages' outputs (one subdirectory per stage) and summary.json."""
    only: str | None = None
    """Run only this stage (its inputs must already be in --out)."""
    start: str | None = aliased(None, "--from")
    """Recompute this stage and every later one (--from). A stage that was interrupted is resumed, not begun
    again, so that rerunning a killed command continues it; clear its directory to begin it anew."""
    seed: int = 0
    """Seed of training and attacks."""
    dtype: str = choice("auto", DTYPES)
    """Compute dtype: auto (bfloat16 where bf16 is fast on this machine, else float32), bfloat16 or float32."""
    device: str = "auto"
    """Device: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_dtype(self.dtype)
        resolve_device(self.device)
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise SettingError(f"--out {self.out} is a file; pass a directory.")


@dataclass(frozen=True)
class Preset:
    """What a preset trains, attacks and analyses: overrides of the jobs' settings."""

    rounds: int
    baselines: tuple[str, ...] = ()
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    """`TrainSettings` fields over the README's configuration."""
    attack: dict[str, Any] = dataclasses.field(default_factory=dict)
    """`AttackSettings` fields (attacks, n, budget, ...) of the prompt attacks."""
    adaptive: dict[str, Any] = dataclasses.field(default_factory=dict)
    """`AttackSettings` fields of the white-box (adaptive) attacks, run as their own campaign."""
    analysis: dict[str, Any] = dataclasses.field(default_factory=dict)
    """`AnalyzeSettings` fields (n_test, ...)."""
    utility: dict[str, Any] = dataclasses.field(default_factory=dict)
    """`measure_utility` keywords (tasks, limit, ...)."""


ALL_ATTACKS = "human,autodan,pair,gcg"
"""The prompt attacks, cheapest first (tables order them GCG, AutoDAN, PAIR, human)."""
CPU_ADAPTIVE = "prefilling,directions,research,research-plain,cone,embedding,latent"
"""The white-box attacks of the cpu preset; direction-aware GCG (a GCG run per behaviour, minutes each on a
CPU) joins them in the paper preset."""
PRESET_PLANS = {
    "quick": Preset(
        rounds=2,
        attack={"attacks": "human", "n": 5, "budget": "cpu"},
        adaptive={"attacks": "prefilling,directions", "n": 5, "budget": "cpu"},
        analysis={"n_test": 32, "max_new_tokens": 16},
        utility={"limit": 32},
    ),
    "cpu": Preset(
        rounds=3,
        baselines=("refat", "deeprefusal"),
        attack={"attacks": ALL_ATTACKS, "n": 10, "budget": "cpu"},
        adaptive={"attacks": CPU_ADAPTIVE, "n": 10, "budget": "cpu"},
    ),
    "paper": Preset(
        rounds=3,
        baselines=("refat", "deeprefusal"),
        attack={"attacks": ALL_ATTACKS, "n": 50, "budget": "harmbench"},
        adaptive={"attacks": f"{CPU_ADAPTIVE},aware-gcg", "n": 50, "budget": "harmbench"},
    ),
}

README_TRAINING = {
    "finder": "dim",
    "utility_weight": 8.0,
    "train_layers": "10:20",
    "search": SearchSettings(max_kl=0.6, min_induce=-10.0),
}
"""The README's configuration (docs/results.md): DIM search with small-model filters, utility weight 8,
training layers 10-19."""
FAIL_CLOSED_SHARES: dict[str, Any] = {"plain_share": 0.25, "ablated_utility_share": 0.5}
"""Fail-closed's mixed shares (README): a quarter of safety examples plain, half of utility examples ablated."""
METHOD_TITLES = {
    "round-0": "standard (round 0)",
    "fail-closed": "fail-closed",
    "refat": "ReFAT",
    "deeprefusal": "DeepRefusal",
}


def plan(settings: ReproduceSettings) -> list[Stage]:
    """The stages of ``settings.preset``, in order."""
    preset = PRESET_PLANS[settings.preset]
    base = TrainSettings(
        model=settings.model,
        seed=settings.seed,
        dtype=settings.dtype,
        device=settings.device,
        **{**README_TRAINING, **preset.training},
    )
    stages = [_train_stage("round-0", replace(base, method="sft", rounds=0), None)]
    methods = ["fail-closed", *preset.baselines]
    for method in methods:
        shares: dict[str, Any] = FAIL_CLOSED_SHARES if method == "fail-closed" else {}
        trained = replace(base, method=method, rounds=preset.rounds, **shares)
        stages.append(_train_stage(method, trained, "round-0", last=method == methods[-1]))
    stages.append(_utility_stage(settings, preset, ["round-0", *methods]))
    stages.append(_analysis_stage(settings, preset, base.search))
    stages.append(_attack_stage("attacks", settings, preset.attack, ["round-0", *methods]))
    stages.append(_attack_stage("adaptive", settings, preset.adaptive, ["round-0", *methods]))
    stages.append(_scoreboard_stage(["round-0", *methods]))
    stages.append(_figures_stage(settings, ["round-0", *methods]))
    # what --dtype auto computes in on this machine: an --out moved to a host where it resolves otherwise (bf16
    # or float32 change the numbers) is recomputed; stages cached before it was keyed count as this host's
    computed = {"precision": resolve(settings.dtype, resolve_device(settings.device)).dtype}
    return [replace(s, config={**s.config, **computed}, defaults={**s.defaults, **computed}) for s in stages]


def _train_stage(name: str, settings: TrainSettings, start: str | None, *, last: bool = False) -> Stage:
    """A training stage; the ``last`` drops the reference logits the training stages kept for each other."""

    def body(context: StageContext) -> dict[str, Any]:
        run_directory = context.directory / "run"
        start_from = None if start is None else str(_path(context, context.inputs[start]["last_round"]))
        resume = context.resume and any(run_directory.glob("round-*"))
        train(replace(settings, out=str(run_directory), start_from=start_from, resume=resume))
        if last:
            ReferenceLogits.release_process()
        rounds = sorted(run_directory.glob("round-*"), key=lambda path: int(path.name.split("-")[1]))
        if not rounds:
            raise SettingError(f"Stage {name} trained no round; see the warnings above.")
        return {"rounds": [_relative(context, path) for path in rounds], "last_round": _relative(context, rounds[-1])}

    what = "round 0, standard safety fine-tuning" if start is None else f"{settings.rounds} {name} rounds from round 0"
    return Stage(
        name,
        # the bundled data's digest too: new data or a new order retrains (not in the defaults, so a stage
        # cached before the digest was recorded is retrained), and every later stage's key follows
        {**_training_config(settings), "data": data.digest()},
        body,
        needs=() if start is None else (start,),
        describe=what,
        defaults=_training_config(TrainSettings()),
    )


def _training_config(settings: TrainSettings) -> dict[str, Any]:
    """A training stage's configuration: every setting but where the stage puts and resumes its run."""
    return {key: value for key, value in asdict(settings).items() if key not in ("out", "resume", "start_from")}


def _attack_stage(name: str, settings: ReproduceSettings, attack: dict[str, Any], methods: list[str]) -> Stage:
    """Each attack in turn on every method's last checkpoint, in the listed order, so that a run stopped
    early has whole columns of the robustness table; each checkpoint's report covers all of them."""

    def body(context: StageContext) -> dict[str, Any]:
        def campaign(method: str, attacks: str) -> Report:
            checkpoint = str(_path(context, context.inputs[method]["last_round"]))
            out = str(context.directory / method)
            return attack_job.run(
                attack_job.AttackSettings(model=checkpoint, out=out, **{**config, "attacks": attacks})
            )

        for attack in config["attacks"].split(",")[:-1]:
            for method in methods:
                campaign(method, attack)
        results = {}
        for method in methods:  # the last attack, then each report (the other attacks' behaviours are cached)
            report = campaign(method, config["attacks"])
            out = _relative(context, context.directory / method)
            results[method] = {"report": out, "rates": report.data["attacks"]["rates"]}
        return results

    config = {"seed": settings.seed, "dtype": settings.dtype, "device": settings.device, **attack}
    what = f"{config.get('attacks', 'every attack')} on {config.get('n', 'the default number of')} behaviours"
    # each case file carries its own key (`mechrefusal.attacks.campaign`): another attack list or n keeps them
    return Stage(name, config, body, needs=tuple(methods), describe=what, keeps_pieces=True)


def _scoreboard_stage(methods: list[str]) -> Stage:
    def body(context: StageContext) -> dict[str, Any]:
        out = context.directory.parent
        sections, results = [], {}
        for method in methods:
            board = scoreboard([out / context.inputs[stage][method]["report"] for stage in ("attacks", "adaptive")])
            sections.append(f"## {METHOD_TITLES.get(method, method)}\n\n{board.to_markdown()}")
            weakest = board.weakest
            results[method] = {"weakest": weakest.attack, "asr": weakest.asr, "refusal": weakest.refusal}
            (context.directory / f"{method}.json").write_text(json.dumps(board.to_dict(), indent=1))
        (context.directory / "scoreboard.md").write_text("# Robustness scoreboard\n\n" + "\n\n".join(sections) + "\n")
        return results

    return Stage(
        "scoreboard",
        {},
        body,
        needs=("attacks", "adaptive"),
        describe="every prompt and white-box attack per checkpoint, the weakest named",
    )


def _utility_stage(settings: ReproduceSettings, preset: Preset, methods: list[str]) -> Stage:
    def body(context: StageContext) -> dict[str, Any]:
        reference = load(settings.model, device=settings.device)
        results = {}
        for method in methods:
            model = load(str(_path(context, context.inputs[method]["last_round"])), device=settings.device)
            measured = measure_utility(model, reference, dtype=settings.dtype, **preset.utility).to_dict()
            path = context.directory / f"{method}.json"
            path.write_text(json.dumps(measured, indent=1))
            results[method] = {"file": _relative(context, path), **{k: measured[k] for k in UTILITY_SUMMARY}}
        return results

    # the local tasks' files too: an edited question or answer key re-measures (nothing else would)
    config = {"dtype": settings.dtype, "device": settings.device, **preset.utility, "local_tasks": local_tasks_digest()}
    what = "zero-shot accuracy, CE and KL against the original model, harmless and edgy compliance"
    return Stage("utility", config, body, needs=tuple(methods), describe=what)


UTILITY_SUMMARY = ("tasks", "kl", "harmless_compliance", "edgy_compliance")
"""The utility numbers a stage's result repeats for the story (the rest is in its JSON file)."""


def _analysis_stage(settings: ReproduceSettings, preset: Preset, search: SearchSettings) -> Stage:
    """The analysis of fail-closed against round 0; its fresh direction is searched as the trainer searches
    (``search``: its KL and induce filters, looser than the analysis job's 0.1 and 0, and its prompts per
    set, fewer than the analysis job's 128): an attacker searches at least as the defender does, and on the
    embedded model the trainer's search finds the stronger direction (docs/results.md, sessions 10 and 12:
    on the cpu preset's fail-closed model 30% refusal left, against 72% with 128 prompts)."""

    def body(context: StageContext) -> dict[str, Any]:
        report = analyze_job.run(
            analyze_job.AnalyzeSettings(
                model=str(_path(context, context.inputs["fail-closed"]["last_round"])),
                compare=str(_path(context, context.inputs["round-0"]["last_round"])),
                out=str(context.directory),
                **config,
            )
        )
        return {"report": _relative(context, context.directory), "models": [m.model for m in report.models]}

    trainer_search = {"max_kl": search.max_kl, "min_induce": search.min_induce, "n_train": search.n_prompts}
    config = {"dtype": settings.dtype, "device": settings.device, **trainer_search, **preset.analysis}
    return Stage(
        "analysis", config, body, needs=("round-0", "fail-closed"), describe="directions of fail-closed vs round 0"
    )


def _figures_stage(settings: ReproduceSettings, methods: list[str]) -> Stage:
    def body(context: StageContext) -> dict[str, Any]:
        out = context.directory.parent
        attacks = {method: out / context.inputs["attacks"][method]["report"] for method in methods}
        runs = {method: out / method / "run" for method in methods}
        analysis = out / context.inputs["analysis"]["report"]
        last = str(_path(context, context.inputs["fail-closed"]["last_round"]))
        last_round = int(Path(last).name.split("-")[1])
        utility = {method: out / context.inputs["utility"][method]["file"] for method in methods}
        named = [f"{METHOD_TITLES.get(m, m)}={attacks[m]}" for m in methods]
        compute = ["--device", settings.device, "--dtype", settings.dtype]  # of the figures with forward passes
        judges = read_attacks(attacks["round-0"])["judges"]
        harm = next((name for name, about in judges.items() if about["measures"] == "harm"), "harm")
        commands = {
            "fail_open": [str(analysis), str(attacks["round-0"]), "--role", "compare", *compute],
            "robustness": [*named, "--judge", harm],
            "training_cost": [f"{METHOD_TITLES.get(m, m)}={runs[m]}" for m in methods],  # round 0's own bar too
            "cosines": [str(runs["fail-closed"])],
            "ablations": [str(analysis)],
            "independence": [str(analysis), "--role", "model"],
            "attack_projections": [last, str(attacks["fail-closed"]), *compute],
            "rounds": [
                "--attacks",
                f"0={attacks['round-0']}",
                f"{last_round}={attacks['fail-closed']}",
                "--report",
                f"{last_round}={analysis}",
                "--compare",
                f"0={analysis}",
                "--utility",
                f"0={utility['round-0']}",
                f"{last_round}={utility['fail-closed']}",
                "--judge",
                harm,
            ],
            "training_curves": [str(runs["fail-closed"])],
            "overrefusal_utility": [f"{METHOD_TITLES.get(m, m)}={utility[m]}" for m in methods],
        }
        return {"figures": draw_figures(commands, context.directory)}

    return Stage(
        "figures",
        # whether PNGs can be rendered is part of the key: figures drawn without a Chromium are drawn again,
        # PNGs included, once one is installed
        {"device": settings.device, "dtype": settings.dtype, "png": chromium_path() is not None},
        body,
        needs=("round-0", "fail-closed", "attacks", "utility", "analysis"),
        describe="the paper's figures from the stages above",
        defaults={"png": True},
    )


def analysis_script(name: str, scripts: Path = ANALYSES) -> ModuleType:
    """``scripts/NAME.py`` (an ``analyses/`` script, not a package module) imported as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"analyses_{name}", scripts / f"{name}.py")
    if spec is None or spec.loader is None:
        raise MissingFileError(f"No script {scripts / f'{name}.py'}.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw_figures(commands: dict[str, list[str]], out: Path) -> dict[str, str]:
    """Run ``analyses/fig_NAME.py ARGS --out OUT`` for each figure in this process; NAME -> "written" or
    why not (one figure's missing input does not stop the others)."""
    if not ANALYSES.is_dir():
        raise MissingFileError(
            f"No analyses/ folder beside the package ({ANALYSES}); run from a checkout of the repository."
        )
    outcome = {}
    with one_png_session() as notes:
        for name, arguments in commands.items():
            outcome[name] = _draw(ANALYSES, name, [*arguments, "--out", str(out)])
    if notes:
        print(notes[0])
    return outcome


def _draw(scripts: Path, name: str, arguments: list[str]) -> str:
    """Run ``analyses/fig_NAME.py ARGUMENTS`` in this process: "written", or the script's one-sentence error
    (or, for a failure the script did not foresee, its type and message: the other figures are still drawn)."""
    module = analysis_script(f"fig_{name}", scripts)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            module.main(arguments)
    except SystemExit:
        said = errors.getvalue().strip().splitlines()
        return said[-1].split(" error: ", 1)[-1] if said else "failed"
    except Exception as error:  # a bug in one figure's builder; KeyboardInterrupt still stops the stage
        return f"failed: {type(error).__name__}: {error}"
    return "written"


def _path(context: StageContext, relative: str) -> Path:
    return context.directory.parent / relative


def _relative(context: StageContext, path: Path) -> str:
    return str(path.relative_to(context.directory.parent))


def run(settings: ReproduceSettings, *, announce: Callable[[str], None] = print) -> list[StageRecord]:
    """Run (or reuse) every stage of the preset, write ``summary.json`` and return the stages' records."""
    keep_freed_memory()
    stages = plan(settings)
    device = resolve_device(settings.device)
    precision = resolve(settings.dtype, device)
    announce(
        f"reproduce --preset {settings.preset}: {len(stages)} stages into {settings.out}; compute: {device}, "
        f"{precision.reason}"
    )
    records = run_stages(stages, settings.out, only=settings.only, start=settings.start, announce=announce)
    summary = {"preset": settings.preset, "settings": asdict(settings), "stages": [asdict(r) for r in records]}
    (Path(settings.out) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return records


def story(records: list[StageRecord], out: str | Path) -> list[str]:
    """The run in one screen: what each stage did, round 0's fail-open check, the fail-closed model under
    ablation and attacks, and where the outputs are."""
    results = {record.name: record for record in records}
    lines = [f"{r.name:<12} {r.status:<7} {r.seconds:>8.1f} s  {r.why}".rstrip() for r in records]
    analysis = results.get("analysis")
    if analysis is not None and analysis.result:
        report = Report.load(Path(out) / analysis.result["report"])
        fail_closed, standard = report.models
        for title, model in (("standard (round 0)", standard), ("fail-closed", fail_closed)):
            lines.append(f"{title}: {_ablation_story(model)}")
    attacks = results.get("attacks")
    if attacks is not None and attacks.result:
        for method, entry in attacks.result.items():
            average = entry["rates"]["average"]
            rates = ", ".join(f"{key} {value:.0%}" for key, value in average.items())
            lines.append(f"attacks on {METHOD_TITLES.get(method, method)}: average {rates}")
    adaptive, board = results.get("adaptive"), results.get("scoreboard")
    if adaptive is not None and adaptive.result:
        scored = board is not None and bool(board.result)  # the scoreboard of this run's white-box campaigns
        for method, entry in adaptive.result.items():
            rates = _white_box(out, method, entry, scored)
            lines.append(f"white-box attacks on {METHOD_TITLES.get(method, method)}: {rates}")
    if board is not None and board.result:
        for method, weakest in board.result.items():
            asr = "no harm judge" if weakest["asr"] is None else f"ASR {weakest['asr']:.0%}"
            lines.append(
                f"weakest attack on {METHOD_TITLES.get(method, method)}: {weakest['weakest']} ({asr}, "
                f"refusal {_percent(weakest['refusal'])})"
            )
    utility = results.get("utility")
    if utility is not None and utility.result:
        for method, entry in utility.result.items():
            accuracy = ", ".join(f"{task} {score['accuracy']:.0%}" for task, score in entry["tasks"].items())
            lines.append(
                f"utility of {METHOD_TITLES.get(method, method)}: {accuracy or 'no task measured'}; KL to the original "
                f"{entry['kl']:.3f}; complies with {entry['harmless_compliance']:.0%} of harmless and "
                f"{entry['edgy_compliance']:.0%} of safe-but-edgy prompts"
            )
    figures = results.get("figures")
    if figures is not None and figures.result:
        drawn = figures.result["figures"]
        missing = [f"{name} ({why})" for name, why in drawn.items() if why != "written"]
        lines.append(
            f"figures: {sum(why == 'written' for why in drawn.values())} of {len(drawn)} in {Path(out) / 'figures'}"
            f" (README.md there gives each caption, its numbers and command)"
            + (f"; not drawn: {'; '.join(missing)}" if missing else "")
        )
    lines.append(
        f"reports: {Path(out) / 'analysis' / 'report.html'}, {Path(out) / 'attacks'}/<method>/report.html, "
        f"{Path(out) / 'scoreboard' / 'scoreboard.md'}"
    )
    return lines


def _white_box(out: str | Path, method: str, entry: dict[str, Any], scored: bool) -> str:
    """The white-box attacks' ASR on one checkpoint, a rate per variant (``directions d0`` ... ``directions
    all``) from the scoreboard stage's rows when it is ``scored``; else each attack's rate pooled over its
    variants (HarmBench's per-behaviour mean), said so."""
    names = [attack for attack in entry["rates"] if attack != "average"]
    path = Path(out) / "scoreboard" / f"{method}.json"
    if scored and path.is_file():
        board = Scoreboard.from_dict(json.loads(path.read_text()))
        rows = [
            row
            for row in board.rows
            if any(row.attack.startswith((f"{n} ", f"{n},")) or row.attack == n for n in names)
        ]
        rates = ", ".join(f"{row.attack} {_percent(row.asr)}" for row in rows)
        return f"ASR ({board.harm_judge} judge) {rates}"
    return (
        ", ".join(
            f"{attack} {key} {value:.0%}"
            for attack, measured in entry["rates"].items()
            if attack != "average"
            for key, value in measured.items()
            if key.startswith("asr/")
        )
        + " (each attack's variants pooled)"
    )


def _ablation_story(model: ModelResult) -> str:
    """Refusal plain, under the weakest saved-direction ablation (the verdict is about these; the report's
    own verdict counts the fresh direction too) and under a direction found anew on the model (the
    re-search attack), and harmless refusal."""
    saved = [d for d in model.directions if d.source != "fresh" and d.single_refusal is not None]
    fresh = [d for d in model.directions if d.source == "fresh" and d.single_refusal is not None]
    summary = model.summary
    text = f"refuses {_percent(summary.harmful_refusal)} of harmful test prompts"
    if saved:
        weakest = min(saved, key=lambda d: d.single_refusal or 0.0)
        if (summary.harmful_refusal or 0.0) < summary.threshold:
            verdict = f"too little refusal (below {summary.threshold:.0%}) to call it fail-closed or fail-open"
        elif (weakest.single_refusal or 0.0) >= summary.threshold:
            verdict = "fail-closed under its saved directions"
        else:
            verdict = "fail-open"
        text += (
            f"; {_percent(weakest.single_refusal)} with the weakest of its {len(saved)} saved direction(s) "
            f"({weakest.label}) ablated: {verdict}"
        )
    if fresh:
        text += f"; {_percent(fresh[0].single_refusal)} with a direction found anew ablated"
    return text + f"; harmless refusal {_percent(summary.harmless_refusal)}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def main(argv: list[str] | None = None) -> None:
    parser = SettingsParser(
        prog="python -m mechrefusal.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(parser, ReproduceSettings, positional=None)
    settings = parse_settings(parser, ReproduceSettings, argv)
    try:
        records = run(settings)
    except (MechrefusalError, ValueError) as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        parser.exit(
            130, f"interrupted: finished stages are kept in {settings.out}; run the same command again to resume.\n"
        )
    print(*story(records, settings.out), sep="\n")


if __name__ == "__main__":
    main()
