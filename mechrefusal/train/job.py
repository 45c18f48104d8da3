"""The training job: round 0 (standard safety fine-tuning), then rounds of the chosen method (`METHODS`),
with a direction search where the method asks for one and an atomic checkpoint after every round;
resumable from the last complete round."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from mechrefusal import data
from mechrefusal.core.cache import atomic_directory
from mechrefusal.core.checkpoint_record import METADATA, read_metadata
from mechrefusal.core.cli import SETTINGS_FILE, flat_settings, write_settings
from mechrefusal.core.devices import resolve_device
from mechrefusal.core.errors import CheckpointError, SettingError
from mechrefusal.core.memory import keep_freed_memory
from mechrefusal.core.precision import hardware, resolve
from mechrefusal.core.provenance import versions
from mechrefusal.directions import Direction, DirectionSet
from mechrefusal.interventions import Ablate
from mechrefusal.measure.metrics import refusal_score
from mechrefusal.models import Model, load
from mechrefusal.train.adversary import latent_adversary
from mechrefusal.train.checkpoint import complete_rounds, round_directory, save_checkpoint
from mechrefusal.train.loop import ablate_all, train_round
from mechrefusal.train.methods import METHODS, TrainingMethod
from mechrefusal.train.parallel import distributed_rank_and_size, init_distributed
from mechrefusal.train.recovery import recovery
from mechrefusal.train.reference import ReferenceLogits
from mechrefusal.train.refresh import RefreshPlan
from mechrefusal.train.search import max_cosine, search_summary, trainer_search
from mechrefusal.train.settings import AFTER_ROUND_ZERO, EXECUTION, TrainSettings, saved_settings
from mechrefusal.train.targets import training_data, with_edgy_share

N_VAL_EXAMPLES = 16  # per set, for the loss evaluated during a round


def run(settings: TrainSettings, *, progress: bool = True) -> list[Path]:
    """Train and checkpoint every round; return the round directories written by this call."""
    keep_freed_memory()
    torch.manual_seed(settings.seed)
    init_distributed(resolve_device(settings.device))
    is_writer = distributed_rank_and_size()[0] == 0
    reference = load(settings.model, device=settings.device)
    reference.bridge.requires_grad_(False)  # never trained: its casts are kept (`cast_once`)
    method = METHODS.get(settings.method)(settings)
    model, directions, first_round = _start(settings)
    last = first_round - 1
    _check_searches(method, settings, last)
    if first_round and _ended(method, last, directions, _found_in(settings.out, last, directions)):
        warnings.warn(
            f"{settings.out} ended after round {last} (its search left no direction to train against); "
            "resuming trains nothing. Start another --out to train again.",
            stacklevel=2,
        )
        return []
    train = training_data(
        reference,
        "train",
        limit=settings.n_examples,
        max_new_tokens=settings.max_new_tokens,
        dtype=settings.dtype,
        seed=settings.seed,
        judge=settings.judge,
        public=settings.public_harmful,
        public_share=settings.public_share,
        public_seed=settings.public_seed,
        every_compliant=settings.recovery_share > 0,
        progress=progress,
    )
    val = training_data(
        reference,
        "val",
        limit=N_VAL_EXAMPLES * 2,
        max_new_tokens=settings.max_new_tokens,
        dtype=settings.dtype,
        seed=settings.seed,
        judge=settings.judge,
        progress=progress,
    )
    val_examples = (val.harmful[:N_VAL_EXAMPLES], val.harmless[:N_VAL_EXAMPLES])
    original = ReferenceLogits.for_process(reference)  # the utility loss's reference logits, kept job to job
    written = []
    for round_index in range(first_round, method.last_round() + 1):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(settings.seed * 1000 + round_index + 500)
        adversary = turn = None
        harmless = train.harmless
        if round_index == 0:  # plain safety fine-tuning for every method
            plan, harmless_plan, held_out = ablate_all(None), None, None
        else:
            adversary = latent_adversary(model, settings)
            if settings.recovery_share:
                draws = torch.Generator().manual_seed(settings.seed * 1000 + round_index + 900)
                turn = recovery(model, train.compliant, settings.recovery_share, settings.recovery_tokens, draws)
            plan = method.safety_plan(model, directions, round_index=round_index, generator=generator)
            harmless_plan = method.utility_plan(directions, round_index=round_index, generator=generator)
            held_out = method.val_intervention(directions, round_index=round_index)
            harmless = with_edgy_share(train.harmless, settings.edgy_share)
        history = train_round(
            model,
            original,
            train.harmful,
            harmless,
            val_examples,
            settings,
            plan=plan,
            utility_plan=harmless_plan,
            val_intervention=held_out,
            round_index=round_index,
            adversary=adversary,
            recovery=turn,
            progress=progress,
        )
        search = None
        searches = round_index == 0 or method.searches_after(round_index)
        if searches:
            search = trainer_search(model, directions, settings, progress=progress)
        found = search if search is not None and search.provenance["passed_filters"] else None
        if found is not None:
            directions.append(found)
        metrics = {
            "training": asdict(history),
            "direction_found": found is not None,
            "search": None if search is None else search_summary(search),
        }
        if adversary is not None:
            metrics["latent"] = adversary.summary()
        if isinstance(plan, RefreshPlan):
            metrics["refresh"] = plan.found
        if round_index > 0 and searches and settings.fresh_unconditioned:
            unconditioned, metrics["unconditioned_search"] = _unconditioned(model, directions, settings, progress)
            found = found or unconditioned
        metrics.update(_round_metrics(model, directions))
        if is_writer:
            written.append(
                save_checkpoint(
                    model,
                    directions,
                    settings.out,
                    round_index,
                    {
                        "method": settings.method,
                        "settings": asdict(settings),
                        "metrics": metrics,
                        "own_refusal_targets": train.own_refusals,
                        "n_train": [len(train.harmful), len(train.harmless)],
                        "processes": distributed_rank_and_size()[1],
                        "versions": versions(),
                        "precision": resolve(settings.dtype, model.device).to_dict(),
                        "hardware": hardware(),
                        "wall_time_s": round(time.perf_counter() - started, 1),
                    },
                )
            )
        if not len(directions) and method.needs_direction:
            warnings.warn(
                f"Round {round_index} left no refusal direction to ablate (none passed the selection "
                f"filters); {settings.method} stops here. The best candidate's scores are under 'search' "
                "in the round's mechrefusal.json; the filters are --search-max-kl and --search-min-induce.",
                stacklevel=2,
            )
        if _ended(method, round_index, directions, found):
            break
    return written


def _ended(method: TrainingMethod, round_index: int, directions: DirectionSet, found: Direction | None) -> bool:
    """Whether training ends after this round: the method needs a direction and none is saved, or it stops
    given the direction the round found (``found``)."""
    if not len(directions) and method.needs_direction:
        return True
    return round_index > 0 and method.stops_after(round_index, found)


def _found_in(out: str, round_index: int, directions: DirectionSet) -> Direction | None:
    """The direction a saved round added (the last of its ``directions``), else ``None``: what that round's
    ``found`` was, for a resumed run."""
    metrics = read_metadata(round_directory(out, round_index))["metrics"]
    added = metrics["direction_found"] or metrics.get("unconditioned_search", {}).get("added", False)
    return directions[-1] if added else None


def _start(settings: TrainSettings) -> tuple[Model, DirectionSet, int]:
    """The model, directions and first round to train: fresh, or from the last complete round."""
    done = complete_rounds(settings.out)
    if done and not settings.resume:
        raise CheckpointError(
            f"{settings.out} already holds rounds {done}; pass --resume to continue them or choose another --out."
        )
    if not done and settings.start_from:
        _copy_round_zero(settings)
        done = [0]
    if not done:
        return load(settings.model, device=settings.device), DirectionSet(), 0
    for stale in Path(settings.out).glob(".tmp-round-*"):  # a round a killed run did not finish
        shutil.rmtree(stale, ignore_errors=True)
    last = round_directory(settings.out, done[-1])
    try:
        ignore = ("resume", "rounds", "consolidation_rounds", "out", *EXECUTION)  # `_check_searches` checks it
        changed = _changed(read_metadata(last)["settings"], settings, ignore=ignore)
    except SettingError as error:
        raise CheckpointError(f"Cannot resume {settings.out}: {error}") from None
    if changed:
        raise CheckpointError(f"Cannot resume {settings.out}: settings {changed} differ from the saved run.")
    model = load(last, device=settings.device)
    return model, model.directions or DirectionSet(), done[-1] + 1


def _check_searches(method: TrainingMethod, settings: TrainSettings, last: int) -> None:
    """Raise unless every saved round after round 0 (up to ``last``) searched a direction exactly when
    ``method`` would: a resumed run may add rounds or consolidation rounds, not change the saved ones."""
    for round_index in range(1, last + 1):
        metrics = read_metadata(round_directory(settings.out, round_index))["metrics"]
        if "search" not in metrics:  # written before the searches were recorded
            continue
        searched = metrics["search"] is not None
        if searched != method.searches_after(round_index):
            raise CheckpointError(
                f"Cannot resume {settings.out}: its round {round_index} "
                f"{'searched' if searched else 'did not search'} for a new direction, which --rounds "
                f"{settings.rounds} with --consolidation-rounds {settings.consolidation_rounds} would not do."
            )


def _copy_round_zero(settings: TrainSettings) -> None:
    """Copy a round-0 checkpoint with the same round-0 settings into ``out`` as this run's round 0."""
    source = Path(str(settings.start_from))  # set: the caller checked
    try:
        saved = read_metadata(source)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"--start-from {source} is not a trainer checkpoint ({error}).") from None
    if saved["round"] != 0:
        raise CheckpointError(f"--start-from needs a round-0 checkpoint; {source} is round {saved['round']}.")
    try:
        changed = _changed(saved["settings"], settings, ignore=AFTER_ROUND_ZERO + EXECUTION)
    except SettingError as error:
        raise CheckpointError(f"Cannot start from {source}: {error}") from None
    if changed:
        raise CheckpointError(f"Cannot start from {source}: its round-0 settings {changed} differ from these.")
    with atomic_directory(round_directory(settings.out, 0)) as scratch:
        shutil.copytree(source, scratch, dirs_exist_ok=True)
        (scratch / METADATA).write_text(
            json.dumps({**saved, "settings": asdict(settings), "copied_from": str(source)}, indent=2)
        )
        write_settings(settings, scratch / SETTINGS_FILE)


def _changed(saved: dict, settings: TrainSettings, ignore: tuple[str, ...]) -> list[str]:
    """The settings (dotted: ``rdo.lr``) that differ from a checkpoint's; a setting it predates counts as
    its default. ``ignore`` names settings or whole groups."""
    old = saved_settings(saved)
    return sorted(
        key
        for key, value in flat_settings(asdict(settings)).items()
        if key not in ignore and key.split(".")[0] not in ignore and old[key] != value
    )


def _unconditioned(
    model: Model, directions: DirectionSet, settings: TrainSettings, progress: bool
) -> tuple[Direction | None, dict]:
    """Search a direction with nothing ablated and add it to ``directions`` when it passes the filters and
    its cosine with every saved one is at most ``fresh_max_cosine``; return it (when added) and its summary."""
    search = trainer_search(model, DirectionSet(), settings, progress=progress)
    cosine = max_cosine(search, directions)
    added = search.provenance["passed_filters"] and cosine <= settings.fresh_max_cosine
    if added:
        search.provenance["unconditioned"] = True  # told apart from the conditioned ones in the checkpoint
        directions.append(search)
    return (search if added else None), {**search_summary(search), "max_cosine": cosine, "added": added}


def _round_metrics(model: Model, directions: DirectionSet, n: int = 32) -> dict:
    """Cheap end-of-round measurements on the val splits (refusal scores, one pass each)."""
    harmful, harmless = data.load("harmful", "val")[:n], data.load("harmless", "val")[:n]
    metrics = {
        "val_refusal_score_harmful": refusal_score(model, harmful).mean().item(),
        "val_refusal_score_harmless": refusal_score(model, harmless).mean().item(),
    }
    if len(directions):
        metrics["val_refusal_score_harmful_all_ablated"] = (
            refusal_score(model, harmful, intervention=Ablate(directions)).mean().item()
        )
    return metrics
