"""`python -m mechrefusal.attack [CKPT] --attacks gcg,autodan,pair,human --behaviours harmbench --n N --out DIR`

Attacks a model (a checkpoint, optionally with some of its saved directions ablated: ``--ablate d0`` or
``all``) with jailbreak attacks on N behaviours, generates greedy completions of every test case, judges
them, and prints the attack success rate (ASR) per attack and averaged, each with its judge and the
judge's measured agreement with human labels. Per-behaviour results are cached in ``DIR/cases/``: a killed
campaign continues where it stopped. Writes ``DIR/report.html`` and ``DIR/report.json`` (the attack section
of the analysis report) and ``DIR/settings.toml``, which replays the campaign (``--config``).

From Python: ``mechrefusal.attack.run(AttackSettings(model="runs/fc/round-3", n=5))``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mechrefusal.analysis.report import Report
from mechrefusal.analysis.scoreboard import Scoreboard
from mechrefusal.attacks import ATTACKS, Attack
from mechrefusal.attacks.behaviours import load_behaviours
from mechrefusal.attacks.campaign import run_campaign
from mechrefusal.attacks.harmless_kl import harmless_prompts
from mechrefusal.core.cli import (
    SETTINGS_FILE,
    SettingsParser,
    add_settings_arguments,
    choice,
    parse_settings,
    write_settings,
)
from mechrefusal.core.devices import resolve_device
from mechrefusal.core.errors import MechrefusalError, SettingError
from mechrefusal.core.memory import keep_freed_memory
from mechrefusal.core.precision import DTYPES, check_dtype, hardware, resolve
from mechrefusal.core.provenance import versions
from mechrefusal.interventions import Ablate
from mechrefusal.measure.generation import GENERATION_BATCH_SIZE
from mechrefusal.measure.judges import JUDGES
from mechrefusal.models import Model, load

BUDGETS = ("cpu", "harmbench")
CPU_NEW_TOKENS = 64
"""Completion length on a CPU (HarmBench generates 512 tokens; a 135M model rarely says more than 64 that
a judge needs, and generation dominates a CPU campaign's time otherwise)."""
GPU_NEW_TOKENS = 512


@dataclass
class AttackSettings:
    """Settings of the attack job (the CLI flags have the same names)."""

    model: str | None = None
    """Model spec or checkpoint directory for `mechrefusal.load` (default: the embedded SmolLM2-135M-Instruct)."""
    attacks: str = "gcg,autodan,pair,human"
    """Comma-separated attacks (registered names, mechrefusal.attacks.ATTACKS, or 'package.module:Class')."""
    behaviours: str = "harmbench"
    """Behaviours: a named instruction set (harmbench, advbench, harmful) or a .jsonl/.csv/.txt file."""
    split: str = choice("test", ("test", "val", "train", "all"))
    """Split of a named set (the held-out test split by default; all = the whole set)."""
    n: int = 10
    """Number of behaviours (the first N of the set or file)."""
    budget: str = choice("cpu", BUDGETS)
    """Attack budgets: cpu (one behaviour in minutes on a CPU) or harmbench (HarmBench's published budgets)."""
    ablate: str = "none"
    """Saved directions ablated during the attack and generation: none, all, or labels such as d0,d2."""
    judges: str = "harm,substring"
    """Comma-separated judges (mechrefusal.JUDGES); harm judges give ASRs, refusal judges refusal rates."""
    attacker: str | None = None
    """PAIR's attacker chat model: a mechrefusal.load spec or openai:<base_url>#<model> (default: embedded)."""
    max_new_tokens: int | None = None
    """Tokens generated per test case (default: 512 on a GPU as HarmBench, 64 on a CPU)."""
    seed: int = 0
    """Seed of every attack (each behaviour's seed derives from it)."""
    out: str = "reports/attack"
    """Directory for cases/, report.html, report.json and settings.toml."""
    dtype: str = choice("auto", DTYPES)
    """Compute dtype of the attacks and the completions: auto (bfloat16 autocast where bf16 is fast on this
    machine, else float32), bfloat16 or float32."""
    batch_size: int = GENERATION_BATCH_SIZE
    """Prompts per forward pass when generating completions."""
    harmless_kl_prompts: int = 16
    """Harmless test prompts the first-token KL of each model edit (the direction attacks' ablations) is
    measured on."""
    device: str = "auto"
    """Device: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        if not self.attack_names:
            raise SettingError("--attacks names no attack; give e.g. gcg,human.")
        for name in self.attack_names:
            ATTACKS.get(name)
        if not self.judge_names:
            raise SettingError("--judges names no judge; give e.g. harm,substring.")
        for name in self.judge_names:
            JUDGES.get(name)
        if self.n < 1:
            raise SettingError(f"--n must be at least 1, got {self.n}.")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise SettingError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}.")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise SettingError(f"--out {self.out} is a file; pass a directory.")
        check_dtype(self.dtype)
        resolve_device(self.device)
        harmless_prompts(self.harmless_kl_prompts)

    @property
    def attack_names(self) -> list[str]:
        return [name.strip() for name in self.attacks.split(",") if name.strip()]

    @property
    def judge_names(self) -> list[str]:
        return [name.strip() for name in self.judges.split(",") if name.strip()]


def build_attack(name: str, budget: str, attacker: str | None = None, dtype: str | None = None) -> Attack:
    """The attack ``name`` at a budget preset (``cpu`` or ``harmbench``), with PAIR's attacker if given and
    the compute ``dtype`` if given, each set on any dataclass attack that has such a field."""
    cls = ATTACKS.get(name)
    preset = getattr(cls, "preset", None)
    attack = preset(budget) if preset is not None else cls()
    options = {key: value for key, value in (("attacker", attacker), ("dtype", dtype)) if value is not None}
    if dataclasses.is_dataclass(attack):
        names = {f.name for f in dataclasses.fields(attack)}
        options = {key: value for key, value in options.items() if key in names}
        if options:
            attack = dataclasses.replace(attack, **options)  # type: ignore[type-var]
    return attack


def ablation(model: Model, labels: str) -> Ablate | None:
    """The saved directions named by ``labels`` (``none``, ``all`` or ``d0,d2``) as one ablation."""
    if labels == "none":
        return None
    saved = model.directions
    if saved is None or len(saved) == 0:
        raise SettingError(f"--ablate {labels}: {model.spec} has no saved directions; use --ablate none.")
    if labels == "all":
        return Ablate(saved)
    picked = []
    for label in (part.strip() for part in labels.split(",")):
        index = int(label[1:]) if label.strip().startswith("d") and label.strip()[1:].isdigit() else -1
        if not 0 <= index < len(saved):
            raise SettingError(
                f"--ablate: {label!r} is not one of the saved directions d0..d{len(saved) - 1}, none, all."
            )
        picked.append(saved[index])
    return Ablate(picked)


def run(settings: AttackSettings, *, progress: bool = True) -> Report:
    """Run the campaign, write the report directory, and return the report."""
    started = time.perf_counter()
    keep_freed_memory()
    model = load(settings.model, device=settings.device)
    behaviours = load_behaviours(
        settings.behaviours, settings.n, split=None if settings.split == "all" else settings.split
    )
    attacks = {
        name: build_attack(name, settings.budget, settings.attacker, settings.dtype) for name in settings.attack_names
    }
    device = resolve_device(settings.device)
    new_tokens = settings.max_new_tokens or (GPU_NEW_TOKENS if device.type == "cuda" else CPU_NEW_TOKENS)
    campaign = run_campaign(
        model,
        attacks,
        behaviours,
        out=settings.out,
        judges=settings.judge_names,
        intervention=ablation(model, settings.ablate),
        seed=settings.seed,
        max_new_tokens=new_tokens,
        dtype=settings.dtype,
        batch_size=settings.batch_size,
        harmless_kl_prompts=settings.harmless_kl_prompts,
        progress=progress,
    )
    attacked = {
        **campaign.to_dict(),
        "model": model.spec,
        "ablate": settings.ablate,
        "max_new_tokens": new_tokens,
        "budget": settings.budget,
        "seed": settings.seed,
    }
    report = Report(
        {
            "models": [],
            "attacks": attacked,
            "scoreboard": Scoreboard.from_entries([attacked]).to_dict(),
            "settings": asdict(settings),
            "versions": versions(),
            "precision": resolve(settings.dtype, device).to_dict(),
            "hardware": hardware(),
            "wall_time_s": round(time.perf_counter() - started, 1),
        }
    )
    report.save(settings.out)
    write_settings(settings, Path(settings.out) / SETTINGS_FILE)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = SettingsParser(
        prog="python -m mechrefusal.attack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_settings_arguments(parser, AttackSettings)
    settings = parse_settings(parser, AttackSettings, argv)
    try:
        report = run(settings)
    except (MechrefusalError, ValueError) as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        finished = len(list(Path(settings.out).glob("cases/*/*.json")))
        parser.exit(
            130,
            f"interrupted: {finished} attacked behaviours are kept in {Path(settings.out) / 'cases'}; "
            "run the same command again to continue.\n",
        )
    print(report.summary())
    print(*report.notes, sep="\n")
    print(f"report: {Path(settings.out) / 'report.html'}")


if __name__ == "__main__":
    main()
