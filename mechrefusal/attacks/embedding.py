"""The embedding-space attack (Schwinn et al. 2024): a suffix of continuous embedding vectors, no token
constraint.

The user message is the behaviour's text followed by ``suffix_length`` placeholder words (``" ! ! ..."``,
as GCG starts). Their token embeddings are replaced by free vectors, initialised to the placeholders' own
embeddings and moved by signed gradient steps (or Adam) on the target loss, ``step_size`` times the RMS
entry of the embedding matrix per step. The loss is `reply_losses`, the one `target_losses` reports,
computed through the bridge with the campaign's intervention active.

Where the vectors go: `ReplaceEmbeddings` finds the rendered prompt's token ids in each row (a hook on
``embed.hook_in``) and replaces the token embeddings (``embed.hook_out``) at the placeholder offsets within
it. So padding on either side, a KV cache (later steps see only new tokens, which hold no whole prompt)
and generation without one are all handled alike, and the optimisation and the campaign's generation run
the same hook. The test case's ``info`` keeps the best vectors, rounded to 6 significant digits, and the
loss of exactly those rounded vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechrefusal.attacks.base import (
    ATTACKS,
    Behaviour,
    TestCase,
    cache_settings,
    check_positive,
    check_target,
    preset_fields,
)
from mechrefusal.attacks.gcg import GCG
from mechrefusal.attacks.loss import reply_losses
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import check_dtype
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model
from mechrefusal.models.autocast import autocast
from mechrefusal.models.hooks import Hook

HARMBENCH_STEPS = 500
"""The ``"harmbench"`` preset's steps: GCG's HarmBench budget, so the two compare at equal steps (HarmBench
has no embedding attack of its own)."""

OPTIMISERS = ("sign", "adam")


@dataclass(frozen=True)
class ReplaceEmbeddings:
    """Replace the token embeddings at ``offsets`` within ``prompt_ids`` by ``vectors``, in every row whose
    token ids contain ``prompt_ids`` (the last occurrence); rows and passes without it are left alone."""

    prompt_ids: tuple[int, ...]
    offsets: tuple[int, ...]
    vectors: Float[Tensor, "n d_model"]

    def hooks(self, model: Model) -> list[Hook]:
        locate, found = prompt_locator(self.prompt_ids)
        offsets = torch.tensor(self.offsets)

        def replace(embedded: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
            rows, starts = found()
            if not len(rows):
                return embedded
            positions = starts[:, None] + offsets.to(embedded.device)
            edited = embedded.clone()
            edited[rows[:, None], positions] = self.vectors.to(embedded.device, embedded.dtype)
            return edited

        return [("embed.hook_in", locate), ("embed.hook_out", replace)]


def prompt_locator(
    prompt_ids: Sequence[int],
) -> tuple[Callable, Callable[..., tuple[Int[Tensor, " rows"], Int[Tensor, " rows"]]]]:
    """A hook for ``embed.hook_in`` that finds ``prompt_ids`` in each row of a forward pass's token ids, and
    ``found(keep=False)`` giving that pass's ``(rows, starts)``; the last reader of a pass leaves ``keep``
    false, so a later pass without token ids (embeddings given directly) or without a whole prompt (a
    KV-cached generation step) finds nothing."""
    pattern = torch.tensor(list(prompt_ids))
    none = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    latest: list[tuple[Tensor, Tensor]] = []

    def locate(ids: Int[Tensor, "batch seq"], hook) -> Tensor:
        latest.clear()
        if ids.shape[1] >= len(pattern):
            windows = ids.unfold(1, len(pattern), 1)  # [batch, seq - m + 1, m]
            matches = (windows == pattern.to(ids.device)).all(-1)
            index = torch.arange(matches.shape[1], device=ids.device)
            starts = torch.where(matches, index, -1).max(1).values
            rows = (starts >= 0).nonzero().flatten()
            latest.append((rows, starts[rows]))
        return ids

    def found(keep: bool = False) -> tuple[Tensor, Tensor]:
        if not latest:
            return none
        return latest[0] if keep else latest.pop()

    return locate, found


def stored(tensor: Tensor) -> list:
    """``tensor`` as nested lists of floats with 6 significant digits (a test case's JSON ``info``)."""
    flat = [float(f"{value:.6g}") for value in tensor.detach().float().cpu().flatten().tolist()]
    return torch.tensor(flat, dtype=torch.float64).reshape(tensor.shape).tolist()


@ATTACKS.register("embedding")
@dataclass
class EmbeddingAttack:
    """Continuous suffix embeddings optimised on the target loss; defaults are the ``"cpu"`` preset.

    Deterministic given its inputs (the seed is unused: the start is the placeholders' embeddings). The
    best vectors over all steps (each step's loss is that of the vectors it differentiates, plus the final
    ones) are kept.
    """

    steps: int = 100
    suffix_length: int = 20
    """Placeholder words (``!``), one vector each in BPE vocabularies with ``" !"``."""
    step_size: float = 0.1
    """Per step, as a fraction of the embedding matrix's RMS entry (signed steps: each coordinate moves by
    exactly this; Adam: its learning rate)."""
    optimiser: str = "sign"
    dtype: str = "auto"
    progress: bool = True
    caveat: str = field(init=False, default="")

    def __post_init__(self) -> None:
        check_positive(
            "The embedding attack's", {name: getattr(self, name) for name in ("steps", "suffix_length", "step_size")}
        )
        if self.optimiser not in OPTIMISERS:
            raise SettingError(f"Unknown optimiser {self.optimiser!r}; choose one of {', '.join(OPTIMISERS)}.")
        check_dtype(self.dtype)
        if self.steps < HARMBENCH_STEPS:
            self.caveat = f"weak attacker: {self.steps} steps (the harmbench preset: {HARMBENCH_STEPS})"

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EmbeddingAttack:
        """``"cpu"`` (one behaviour on the embedded model in a minute or two) or ``"harmbench"`` (GPU)."""
        presets: dict[str, dict[str, Any]] = {"cpu": {}, "harmbench": {"steps": HARMBENCH_STEPS}}
        return cls(**preset_fields("embedding attack", presets, name, overrides))

    def settings(self) -> dict[str, Any]:
        """The options that change the test cases (everything but ``progress`` and ``caveat``)."""
        return cache_settings(self)

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """One test case: the behaviour's text with the placeholders, ``info`` holding the vectors."""
        check_target(behaviour, "the embedding attack")
        prompts, suffix = GCG(suffix_length=self.suffix_length, progress=False).tokenise(model, [behaviour])
        prompt = behaviour.text + " " + " ".join(["!"] * self.suffix_length)
        before = len(prompts[0].before)
        prompt_ids = tuple(prompts[0].before + suffix.tolist() + prompts[0].after)
        offsets = tuple(range(before, before + len(suffix)))
        weight = cast(Tensor, model.hf_model.get_input_embeddings().weight).detach()
        vectors = weight[suffix.to(model.device)].float().clone().requires_grad_(True)
        scale = self.step_size * float(weight.float().pow(2).mean().sqrt())
        optimiser = torch.optim.Adam([vectors], lr=scale) if self.optimiser == "adam" else None
        batch = model.tokenize_replies([prompt], [behaviour.target], end_of_turn=False)
        edit = ReplaceEmbeddings(prompt_ids, offsets, vectors)
        losses: list[float] = []
        best = (float("inf"), vectors.detach().clone())
        with model.intervene(intervention, edit), autocast(model, self.dtype):
            for step in tqdm(range(self.steps + 1), desc="embedding", disable=not self.progress, leave=False):
                loss = reply_losses(model, batch)[0]
                losses.append(float(loss.detach()))
                if losses[-1] < best[0]:
                    best = (losses[-1], vectors.detach().clone())
                if step == self.steps:
                    break
                (gradient,) = torch.autograd.grad(loss, vectors)
                if optimiser is None:
                    with torch.no_grad():
                        vectors -= scale * gradient.sign()
                else:
                    vectors.grad = gradient
                    optimiser.step()
        kept = stored(best[1])
        edit = ReplaceEmbeddings(prompt_ids, offsets, torch.tensor(kept, device=model.device))
        with torch.no_grad(), model.intervene(intervention, edit), autocast(model, self.dtype):
            final = float(reply_losses(model, batch)[0])
        info = {
            "loss": final,
            "initial_loss": losses[0],
            "steps": self.steps,
            "prompt_ids": list(prompt_ids),
            "offsets": list(offsets),
            "embeddings": kept,
        }
        return [TestCase(prompt, info)]

    def generation_intervention(self, model: Model, case: TestCase) -> ReplaceEmbeddings:
        """The stored vectors in place of the placeholders' embeddings while ``case`` is answered."""
        info = case.info
        vectors = torch.tensor(info["embeddings"], device=model.device)
        return ReplaceEmbeddings(tuple(info["prompt_ids"]), tuple(info["offsets"]), vectors)
