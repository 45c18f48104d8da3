"""AutoDAN (Liu et al. 2023) as HarmBench runs it: a sentence-level genetic search over jailbreak prompts.

The population starts as the first ``population`` of AutoDAN's 128 published prompts, addressed to the
attacked model (``ChatGPT`` -> its name, ``ModelKeeper`` -> its developer; a trainer checkpoint goes by
its base model's name, so that every checkpoint of one model is attacked from the same prompts). A
candidate's user message is the evolved prompt, then `` [PROMPT]: `` and the request, as AutoDAN builds it
(the prompts refer to the request as "[PROMPT]"). Each generation: fitness = the loss of the reply opening
``(🔓Developer Mode Output) `` + the target (lower is fitter), as HarmBench scores it: the prompts ask for
a normal reply followed by a "Developer Mode" one, and the target is how the latter begins; the ``elite``
fraction (at least one) passes unchanged; the rest are children of parents drawn by roulette on the softmax
of minus the loss, crossed over at ``num_points`` sentence boundaries with probability ``crossover`` and
rewritten by the rephraser with probability ``mutation``. Every ``eval_every`` generations the best
prompt's greedy reply is judged, and the search stops once it breaks through (words, not all capitals, no
refusal phrase: `broke_through`). Losses and replies are computed in the compute ``dtype``
(`mechrefusal.models.autocast`); an LLM rephraser runs as it is set up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mechrefusal.attacks.base import (
    ATTACKS,
    STOP_CHECK,
    Behaviour,
    TestCase,
    broke_through,
    check_target,
    preset_fields,
)
from mechrefusal.attacks.loss import target_losses
from mechrefusal.attacks.rephrasers import Rephraser, make_rephraser, resolve, sentences
from mechrefusal.core.checkpoint_record import training_settings
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import check_dtype
from mechrefusal.data.autodan import COUNT, autodan_prompts, personalise
from mechrefusal.interventions import Interventions
from mechrefusal.measure.generation import generate
from mechrefusal.models import DEFAULT_MODEL, Model
from mechrefusal.models.autocast import autocast

# Developers named in place of "ModelKeeper", by a word of the model's name (HarmBench sets one per model).
DEVELOPERS = {
    "smollm": "Hugging Face",
    "llama": "Meta",
    "qwen": "Alibaba Cloud",
    "gemma": "Google",
    "mistral": "Mistral AI",
    "phi": "Microsoft",
    "vicuna": "LMSYS",
}
HARMBENCH: dict[str, Any] = dict(
    population=128, steps=100, elite=0.1, crossover=0.5, num_points=5, mutation=0.01, eval_every=5
)
"""HarmBench's AutoDAN budget: the defaults of its ``AutoDAN`` class (``baselines/autodan/AutoDAN.py``:
batch_size=128, num_steps=100, num_elites=0.1, crossover=0.5, num_points=5, mutation=0.01, eval_steps=5,
mutation by an LLM), read in a public copy of that file; its per-model YAML overrides were not checked."""
CPU: dict[str, Any] = dict(population=8, steps=4, elite=0.1, crossover=0.5, num_points=5, mutation=0.01, eval_every=3)
"""One behaviour on the embedded SmolLM2-135M in a few minutes on one CPU core: 136 s measured for the
whole budget without early stop (prompts are 560-850 tokens, a candidate's loss ~8 s; a candidate already
scored is not scored again, and half the children are unchanged copies)."""


DEVELOPER_MODE_OUTPUT = "(🔓Developer Mode Output) "
"""How the prompts' "Developer Mode" reply begins: HarmBench's AutoDAN puts it before the target it scores."""


def prompt_for(template: str, behaviour: Behaviour) -> str:
    """The user message of a candidate: the evolved prompt, then ``[PROMPT]:`` and the request."""
    return f"{template} [PROMPT]: {behaviour.text}"


def fitness_target(behaviour: Behaviour) -> str:
    """The reply opening whose loss is a candidate's fitness: the Developer Mode marker, then the target."""
    return DEVELOPER_MODE_OUTPUT + behaviour.target


def model_name(spec: str) -> str:
    """The name the prompts give the model ``spec``: a trainer checkpoint's base model (followed through
    checkpoints trained from checkpoints), else the last part of the spec."""
    for _ in range(16):  # a chain of checkpoints; the bound only stops a record that names itself
        settings = training_settings(spec)
        if settings is None:
            break
        spec = settings.get("model") or DEFAULT_MODEL
    return Path(spec.rstrip("/")).name.removesuffix(".gguf")


@ATTACKS.register("autodan")
@dataclass
class AutoDAN:
    """AutoDAN's genetic search; the defaults are the ``"cpu"`` preset."""

    population: int = CPU["population"]
    steps: int = CPU["steps"]
    elite: float = CPU["elite"]
    """Fraction of the population kept unchanged each generation (at least one prompt)."""
    crossover: float = CPU["crossover"]
    num_points: int = CPU["num_points"]
    mutation: float = CPU["mutation"]
    eval_every: int = CPU["eval_every"]
    """Judge the best prompt's reply at generations 0, ``eval_every``, ... and the last (HarmBench's rule)."""
    max_new_tokens: int = 32
    rephraser: str | Rephraser = "auto"
    """``"auto"`` (WordNet when Debian's ``wordnet-base`` is installed, else pool), ``"wordnet"``,
    ``"pool"``, or any `Rephraser` such as a `ChatRephraser` around an LLM."""
    model_name: str | None = None
    """Replaces "ChatGPT" in the prompts; default: `model_name` of the model's spec."""
    developer: str | None = None
    """Replaces "ModelKeeper"; default: looked up in `DEVELOPERS` from the model's name."""
    batch_size: int = 16
    dtype: str = "auto"
    """Compute dtype of the losses and replies: auto, bfloat16 or float32 (`mechrefusal.core.precision`)."""
    progress: bool = True
    caveat: str = field(init=False, default="")

    @classmethod
    def preset(cls, name: str, **options: Any) -> AutoDAN:
        """The ``"cpu"`` budget or ``"harmbench"``'s published one, with any option overridden."""
        return cls(**preset_fields("AutoDAN", {"cpu": CPU, "harmbench": HARMBENCH}, name, options))

    def __post_init__(self) -> None:
        for option in ("population", "steps", "num_points", "eval_every", "max_new_tokens", "batch_size"):
            if getattr(self, option) < 1:
                raise SettingError(f"AutoDAN needs {option} >= 1, got {getattr(self, option)}.")
        if self.population < 2:
            raise SettingError(f"AutoDAN needs a population of at least 2 to cross over, got {self.population}.")
        if self.population > COUNT:
            raise SettingError(
                f"AutoDAN's population starts from its {COUNT} published prompts, not {self.population}."
            )
        for option in ("elite", "crossover", "mutation"):
            if not 0 <= getattr(self, option) <= 1:
                raise SettingError(f"AutoDAN's {option} is a fraction in [0, 1], got {getattr(self, option)}.")
        check_dtype(self.dtype)
        self.caveat = self._caveat()

    @property
    def rephraser_name(self) -> str:
        """The rephraser that runs: ``"wordnet"``, ``"pool"`` or the name of the object given."""
        return resolve(self.rephraser) if isinstance(self.rephraser, str) else self.rephraser.name

    def _caveat(self) -> str:
        notes = []
        if self.rephraser_name in ("wordnet", "pool"):
            how = "WordNet synonym replacement" if self.rephraser_name == "wordnet" else "sentences resampled"
            notes.append(f"mutation by {how} ({self.rephraser_name}), not HarmBench's LLM rephrasing")
        if self.population * self.steps < HARMBENCH["population"] * HARMBENCH["steps"]:
            notes.append(f"budget {self.population} x {self.steps} steps, below HarmBench's 128 x 100")
        return "; ".join(notes)

    def settings(self) -> dict[str, Any]:
        return {
            "population": self.population,
            "steps": self.steps,
            "elite": self.elite,
            "crossover": self.crossover,
            "num_points": self.num_points,
            "mutation": self.mutation,
            "eval_every": self.eval_every,
            "stop_check": STOP_CHECK,
            "max_new_tokens": self.max_new_tokens,
            "rephraser": self.rephraser_name,
            "fitness_target": fitness_target(Behaviour("", "{target}")),
            "model_name": self.model_name,
            "developer": self.developer,
            "dtype": self.dtype,
        }

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """One test case: the fittest prompt found, with its loss history and last judged reply."""
        check_target(behaviour, "AutoDAN")
        rng = random.Random(seed)
        name = self.model_name or model_name(model.spec)
        developer = self.developer or next(
            (who for word, who in DEVELOPERS.items() if word in name.lower()), "its developer"
        )
        pool = [personalise(prompt, name, developer) for prompt in autodan_prompts()]
        rephraser = make_rephraser(self.rephraser, pool) if isinstance(self.rephraser, str) else self.rephraser
        fitness = _Fitness(model, behaviour, intervention, self.batch_size, self.dtype)
        population = pool[: self.population]
        history: list[float] = []
        reply, broke, mutations = "", False, 0
        for step in tqdm(range(self.steps), desc="autodan", disable=not self.progress, leave=False):
            losses = fitness(population)
            order = sorted(range(len(population)), key=lambda i: losses[i])
            history.append(losses[order[0]])
            best = population[order[0]]
            if step % self.eval_every == 0 or step == self.steps - 1:
                with autocast(model, self.dtype):
                    reply = generate(
                        model,
                        [prompt_for(best, behaviour)],
                        max_new_tokens=self.max_new_tokens,
                        intervention=intervention,
                    )[0]
                broke = broke_through([behaviour.text], [reply])[0]
                if broke or step == self.steps - 1:
                    break
            population, mutated = self._next_generation([population[i] for i in order], sorted(losses), rephraser, rng)
            mutations += mutated
        info = {
            "loss": history[-1],
            "losses": history,
            "steps": len(history),
            "stopped_early": broke and len(history) < self.steps,
            "reply": reply,
            "broke_through": broke,
            "template": best,
            "rephraser": rephraser.name,
            "mutations": mutations,
            "model_name": name,
            "developer": developer,
        }
        return [TestCase(prompt_for(best, behaviour), info)]

    def _next_generation(
        self, ranked: list[str], losses: list[float], rephraser: Rephraser, rng: random.Random
    ) -> tuple[list[str], int]:
        """Elites, then children of roulette-drawn parents; returns them and how many were mutated."""
        n_elite = max(1, int(self.elite * len(ranked)))
        weights = torch.softmax(-torch.tensor(losses, dtype=torch.float64), 0).tolist()
        parents = rng.choices(ranked, weights=weights, k=len(ranked) - n_elite)
        children: list[str] = []
        for i in range(0, len(parents), 2):
            pair = parents[i : i + 2]
            if len(pair) == 2 and rng.random() < self.crossover:
                pair = list(crossover(pair[0], pair[1], self.num_points, rng))
            children.extend(pair)
        chosen = [i for i in range(len(children)) if rng.random() < self.mutation]
        if chosen:
            for i, text in zip(chosen, rephraser.rephrase([children[i] for i in chosen], rng)):
                children[i] = text
        return ranked[:n_elite] + children, len(chosen)


def crossover(first: str, second: str, num_points: int, rng: random.Random) -> tuple[str, str]:
    """Two children that swap alternate runs of sentences of the parents, cut at up to ``num_points``
    random sentence boundaries both parents have; a parent's extra sentences go with the last run."""
    a, b = sentences(first), sentences(second)
    shared = min(len(a), len(b))
    cuts = sorted(rng.sample(range(1, shared), min(num_points, shared - 1))) if shared > 1 else []
    child_a: list[str] = []
    child_b: list[str] = []
    for run, (start, stop) in enumerate(zip([0, *cuts], [*cuts, None])):
        own, other = (a, b) if run % 2 == 0 else (b, a)
        child_a += own[start:stop]
        child_b += other[start:stop]
    return " ".join(child_a), " ".join(child_b)


class _Fitness:
    """Target losses of candidate prompts, each scored once per run (elites and unchanged copies are free
    and keep exactly their loss, so the best loss never rises)."""

    def __init__(
        self, model: Model, behaviour: Behaviour, intervention: Interventions, batch_size: int, dtype: str
    ) -> None:
        self.model, self.behaviour, self.intervention = model, behaviour, intervention
        self.batch_size, self.dtype = batch_size, dtype
        self.known: dict[str, float] = {}

    def __call__(self, templates: list[str]) -> list[float]:
        # in population order, then by length (a stable sort), so similar lengths share a batch
        new = sorted(dict.fromkeys(template for template in templates if template not in self.known), key=len)
        if new:
            prompts = [prompt_for(template, self.behaviour) for template in new]
            losses = target_losses(
                self.model,
                prompts,
                [fitness_target(self.behaviour)] * len(prompts),
                intervention=self.intervention,
                batch_size=self.batch_size,
                dtype=self.dtype,
            )
            self.known.update(zip(new, losses.tolist()))
        return [self.known[template] for template in templates]
