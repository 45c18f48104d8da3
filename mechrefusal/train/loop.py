"""One round of fine-tuning: safety loss on harmful examples (under the method's ablation), utility
loss on harmless ones (KL to the original model; no ablation unless a utility plan says so), AdamW,
gradient accumulation, evaluation a few times a round with early stop on a plateau, best weights kept."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechrefusal.core.errors import SettingError
from mechrefusal.interventions import Interventions, per_row
from mechrefusal.measure.losses import reply_cross_entropy, reply_kl
from mechrefusal.models import Model, ReplyBatch
from mechrefusal.models.autocast import autocast, cast_once
from mechrefusal.train.lora import add_lora, merge_lora
from mechrefusal.train.parallel import Parallel, activation_checkpointing, distributed_rank_and_size
from mechrefusal.train.prefix import Groups, grouped_reply_logits
from mechrefusal.train.recovery import Recovery
from mechrefusal.train.reference import ReferenceLogits, reference_logits
from mechrefusal.train.settings import TrainSettings
from mechrefusal.train.targets import Example

Plan = Callable[[int, int], Groups]
"""(step, n examples) -> that step's groups: which examples are trained under which intervention."""
Adversary = Callable[[Model, list[str], ReplyBatch, Interventions], Interventions]
"""(model, instructions, their reply batch, its interventions) -> a perturbation to train the batch under
(`mechrefusal.train.adversary.LatentAdversary`)."""


def ablate_all(intervention: Interventions) -> Plan:
    """Every example under the same intervention (``None``: plain fine-tuning)."""
    return lambda step, n: [(list(range(n)), intervention)]


def ablate_some(intervention: Interventions, p: float, n: int, generator: torch.Generator) -> Groups:
    """One step's groups when each of ``n`` examples is trained under ``intervention`` with probability
    ``p`` and plainly otherwise."""
    ablated = (torch.rand(n, generator=generator) < p).tolist()
    return [([i for i in range(n) if ablated[i]], intervention), ([i for i in range(n) if not ablated[i]], None)]


def split_rows(
    n: int, plain_share: float, share: float, generator: torch.Generator
) -> tuple[list[int], list[int], list[int]]:
    """Two draws per example: ``n`` examples split into plain ones (probability ``plain_share``), chosen
    ones (probability ``share`` of the rest) and the rest, as index lists."""
    draws = torch.rand(n, 2, generator=generator)
    plain = [i for i in range(n) if draws[i, 0] < plain_share]
    chosen = [i for i in range(n) if draws[i, 0] >= plain_share and draws[i, 1] < share]
    rest = [i for i in range(n) if i not in plain and i not in chosen]
    return plain, chosen, rest


@dataclass(repr=False)
class RoundResult:
    steps: int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_val_loss: float = math.inf
    wall_time_s: float = 0.0
    val_safety_loss: list[float | None] = field(default_factory=list)
    """The safety term (CE on harmful replies, under the round's held-out intervention) of each validation loss."""
    val_utility_loss: list[float | None] = field(default_factory=list)
    """The utility term (weighted KL to the original model on harmless replies) of each validation loss."""

    def __repr__(self) -> str:
        last = f"{self.train_loss[-1]:.4g}" if self.train_loss else "n/a"
        return (
            f"RoundResult(steps={self.steps}, last_train_loss={last}, best_val_loss={self.best_val_loss:.4g}, "
            f"evals={len(self.val_loss)}, wall_time_s={self.wall_time_s:.1f})"
        )


def trainable_parameters(model: Model, settings: TrainSettings, round_index: int = 0) -> list[torch.nn.Parameter]:
    """Freeze everything but the decoder layers in ``settings.train_layers`` (or, with ``lora_rank``, but
    fresh LoRA adapters on them); return the trainable parameters."""
    layers = settings.layer_range(model.n_layers)
    if settings.lora_rank:
        return add_lora(model, layers, settings.lora_rank, seed=settings.seed * 1000 + round_index)
    for parameter in model.bridge.parameters():
        parameter.requires_grad_(False)
    chosen: dict[int, torch.nn.Parameter] = {}
    for layer in layers:
        for parameter in model.bridge.blocks[layer].parameters():
            parameter.requires_grad_(True)
            chosen[id(parameter)] = parameter
    return list(chosen.values())


def train_round(
    model: Model,
    reference: Model | ReferenceLogits,
    harmful: Sequence[Example],
    harmless: Sequence[Example],
    val: tuple[Sequence[Example], Sequence[Example]],
    settings: TrainSettings,
    *,
    plan: Plan,
    val_intervention: Interventions,
    round_index: int,
    utility_plan: Plan | None = None,
    adversary: Adversary | None = None,
    recovery: Recovery | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> RoundResult:
    """Fine-tune ``model`` in place for one round and return its loss history. ``plan`` says which harmful
    examples of a step are trained under which intervention, ``utility_plan`` the same for harmless ones;
    ``adversary`` adds a perturbation to each micro-batch's harmful examples (latent adversarial training),
    ``recovery`` turns some of them into recovery examples. ``reference`` is the original model, or its
    `ReferenceLogits` to keep its logits from round to round (else they are kept for this round)."""
    started = time.perf_counter()
    original = reference_logits(reference)
    original.check(model)
    generator = torch.Generator().manual_seed(settings.seed * 1000 + round_index)
    micro = settings.batch_size // settings.grad_accumulation // 2
    rank, world = distributed_rank_and_size()
    if micro % world:
        raise SettingError(
            f"Each micro-batch's {micro} harmful and {micro} harmless examples must split evenly over "
            f"{world} processes; change batch_size or grad_accumulation."
        )
    if adversary is not None and world > 1:
        raise SettingError("Latent adversarial training runs in one process; start it without torchrun.")
    mine = list(range(rank, micro, world))  # this process's share of every micro-batch
    trainable_parameters(model, settings, round_index)
    parallel = Parallel(model, settings.parallel)
    parameters = parallel.parameters()
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    harmful_order, harmless_order = _cycle(len(harmful), generator), _cycle(len(harmless), generator)
    eval_steps = {round(settings.steps * (i + 1) / settings.evals_per_round) for i in range(settings.evals_per_round)}
    result, best_state, stale = RoundResult(steps=0), None, 0
    model.hf_model.train()
    bar = tqdm(range(1, settings.steps + 1), desc=f"round {round_index}", disable=not progress, leave=False)
    # the frozen layers and the reference model are cast to the compute dtype once for the round, not per call
    checkpointing = activation_checkpointing(model, settings.activation_checkpointing)
    # a shared prefix's cache would be filled twice by checkpointing's recomputation, and DDP and FSDP
    # expect one forward pass per backward
    share_prefix = parallel.mode == "single" and not settings.activation_checkpointing
    with checkpointing, cast_once(model), cast_once(original.model):
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for k in range(settings.grad_accumulation):
                h = [harmful[next(harmful_order)] for _ in range(micro)]
                if recovery is not None:
                    h = recovery(h)
                b = [harmless[next(harmless_order)] for _ in range(micro)]
                groups = _share(plan(step, micro), mine)  # every process draws the same plan, then takes its share
                utility_groups = None if utility_plan is None else _share(utility_plan(step, micro), mine)
                with parallel.micro_batch(last=k == settings.grad_accumulation - 1):
                    loss = _loss(
                        model,
                        original,
                        [h[i] for i in mine],
                        [b[i] for i in mine],
                        settings,
                        groups,
                        utility_groups,
                        forward=parallel.forward,
                        adversary=adversary,
                        share_prefix=share_prefix,
                    )
                    (loss / settings.grad_accumulation).backward()
                total += loss.item() / settings.grad_accumulation
            if world > 1:  # each process's loss is the mean over its equal share: the mean of means is the step's
                total = _mean_over_processes(total, model.device)
            optimizer.step()
            result.steps, result.train_loss = step, result.train_loss + [total]
            bar.set_postfix(loss=f"{total:.3f}")
            if on_step is not None:
                on_step(step)
            if step in eval_steps:
                val_loss, safety, utility = evaluate_loss(model, original, *val, settings, val_intervention)
                result.val_loss.append(val_loss)
                result.val_safety_loss.append(safety)
                result.val_utility_loss.append(utility)
                if val_loss < result.best_val_loss:
                    result.best_val_loss, stale = val_loss, 0
                    best_state = [p.detach().clone() for p in parameters]
                else:
                    stale += 1
                    if stale >= settings.patience:
                        break
    if best_state is not None:
        with torch.no_grad():
            for parameter, best in zip(parameters, best_state):
                parameter.copy_(best)
    parallel.end()
    merge_lora(model)
    model.hf_model.eval()
    for parameter in model.bridge.parameters():
        parameter.requires_grad_(False)
    result.wall_time_s = round(time.perf_counter() - started, 1)
    return result


def _mean_over_processes(value: float, device: torch.device) -> float:
    """The mean of ``value`` over the torchrun processes."""
    tensor = torch.tensor([value], device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.item() / torch.distributed.get_world_size()


def _loss(
    model: Model,
    reference: Model | ReferenceLogits,
    harmful: list[Example],
    harmless: list[Example],
    settings: TrainSettings,
    groups: Groups,
    utility_groups: Groups | None = None,
    forward: Callable | None = None,
    adversary: Adversary | None = None,
    share_prefix: bool = True,
) -> torch.Tensor:
    """Mean over the micro-batch's examples of safety CE (harmful, under ``groups``' interventions) and
    weighted utility KL (harmless, under ``utility_groups``'; default: none); see `_loss_terms`."""
    terms = _loss_terms(
        model, reference, harmful, harmless, settings, groups, utility_groups, forward, adversary, share_prefix
    )
    return torch.cat([term for term in terms if term is not None]).mean()


def _loss_terms(
    model: Model,
    reference: Model | ReferenceLogits,
    harmful: list[Example],
    harmless: list[Example],
    settings: TrainSettings,
    groups: Groups,
    utility_groups: Groups | None = None,
    forward: Callable | None = None,
    adversary: Adversary | None = None,
    share_prefix: bool = True,
) -> tuple[Float[Tensor, " harmful"] | None, Float[Tensor, " harmless"] | None]:
    """Per-example safety CE and weighted utility KL (``None`` where a set has no example). Each set is one
    forward pass, every row under its group's intervention (and the harmful rows under ``adversary``'s
    perturbation), with logits only where the replies are predicted and, with ``share_prefix``, the rows'
    common prompt prefix run once per distinct intervention (`grouped_reply_logits`). ``forward`` runs the
    model (default: its bridge; in training, `Parallel.forward`)."""
    safety = utility = None
    original_logits = reference_logits(reference)
    with autocast(model, settings.dtype):
        harmful_batch, groups = _grouped(model, harmful, groups)
        harmless_batch, utility_groups = _grouped(
            model, harmless, utility_groups or [(list(range(len(harmless))), None)]
        )
        if adversary is not None and harmful_batch is not None:  # a perturbation per position: whole rows
            ordered = [example.instruction for example in _in_group_order(harmful, groups)]
            interventions = per_row(groups)
            with model.intervene(interventions, adversary(model, ordered, harmful_batch, interventions)):
                safety = reply_cross_entropy(model.reply_logits(harmful_batch, forward), harmful_batch)
        runs = [] if harmful_batch is None or safety is not None else [(harmful_batch, groups)]
        runs += [] if harmless_batch is None else [(harmless_batch, utility_groups)]
        logits = iter(grouped_reply_logits(model, runs, forward, share=share_prefix))
        if harmful_batch is not None and safety is None:
            safety = reply_cross_entropy(next(logits), harmful_batch)
        if harmless_batch is not None:
            original = original_logits(_in_group_order(harmless, utility_groups), harmless_batch, settings.dtype)
            utility = settings.utility_weight * reply_kl(next(logits), original, harmless_batch)
    return safety, utility


def _grouped(model: Model, examples: list[Example], groups: Groups) -> tuple[ReplyBatch | None, Groups]:
    """The groups' examples as one reply batch, in group order, and the groups that hold any example
    (``None`` batch when none does)."""
    groups = [(indices, intervention) for indices, intervention in groups if indices]
    if not groups:
        return None, []
    return _replies(model, _in_group_order(examples, groups)), groups


def _in_group_order(examples: Sequence[Example], groups: Groups) -> list[Example]:
    """The groups' examples, group after group: the rows of their batch."""
    return [examples[i] for indices, _ in groups for i in indices]


def _replies(model: Model, examples: list[Example]) -> ReplyBatch:
    """The examples' prompts and replies as one (right-padded) reply batch."""
    return model.tokenize_replies(
        [e.instruction for e in examples], [e.reply for e in examples], prefills=[e.prefill for e in examples]
    )


def evaluate_loss(
    model: Model,
    reference: Model | ReferenceLogits,
    harmful: Sequence[Example],
    harmless: Sequence[Example],
    settings: TrainSettings,
    intervention: Interventions,
) -> tuple[float, float | None, float | None]:
    """Validation loss on fixed validation examples, no gradient: the training loss, and its safety and
    utility terms' means (``None`` where a set is empty)."""
    was_training = model.hf_model.training
    model.hf_model.eval()
    with torch.no_grad():
        terms = _loss_terms(
            model, reference, list(harmful), list(harmless), settings, [(list(range(len(harmful))), intervention)]
        )
    model.hf_model.train(was_training)
    present = [term for term in terms if term is not None]
    safety, utility = (None if term is None else term.mean().item() for term in terms)
    return torch.cat(present).mean().item(), safety, utility


def _share(groups: Groups, mine: list[int]) -> Groups:
    """Restrict a micro-batch's ablation groups to this process's examples, re-indexed."""
    position = {index: k for k, index in enumerate(mine)}
    return [([position[i] for i in indices if i in position], intervention) for indices, intervention in groups]


def _cycle(n: int, generator: torch.Generator):
    """Indices 0..n-1 in a fresh random order each pass."""
    while True:
        yield from torch.randperm(n, generator=generator).tolist()
