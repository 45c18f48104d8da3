"""`TrainSettings`: one object for a training job, shared by the CLI and the Python API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mechrefusal.core.cli import aliased, choice, flat_settings, registered
from mechrefusal.core.devices import resolve_device
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import DTYPES, check_dtype
from mechrefusal.data import PUBLIC_SETS
from mechrefusal.directions import FINDERS, DIMSettings, RDOSettings
from mechrefusal.measure.judges import JUDGES, refusal_judge
from mechrefusal.train.methods import METHODS
from mechrefusal.train.search import N_SCORE, N_SEARCH

# Settings that do not change round 0 (training and direction search), so a round 0 can be shared.
AFTER_ROUND_ZERO = (
    "method",
    "rounds",
    "out",
    "resume",
    "start_from",
    "refat_every",
    "ablation_probability",
    "plain_share",
    "ablated_utility_share",
    "fresh_unconditioned",
    "fresh_max_cosine",
    "subspace_share",
    "subspace_fresh",
    "refresh_every",
    "refresh_share",
    "consolidation_rounds",
    "latent",
    "recovery_share",
    "recovery_tokens",
    "edgy_share",
)
# Settings that change where and how a round is computed, not what: a run may resume or start under others.
EXECUTION = ("parallel", "activation_checkpointing", "device")
PARALLEL = ("ddp", "fsdp")
RENAMED = {"max_kl": "search.max_kl", "min_induce": "search.min_induce"}
"""Settings that checkpoints written before the settings had groups kept at the top level."""


@dataclass
class SearchSettings:
    """The direction search after each round (`mechrefusal.train.search.next_direction`)."""

    n_prompts: int = N_SEARCH
    """Train prompts per set (harmful; harmless) the candidate directions are computed from."""
    n_val: int = N_SCORE
    """Validation prompts per set the candidates are scored on."""
    max_kl: float = aliased(0.1, "--max-kl")
    """Largest first-token KL on harmless prompts for an accepted direction."""
    min_induce: float = aliased(0.0, "--min-induce")
    """Smallest induce score (harmless refusal score with the direction added) of an accepted direction."""
    prune_layer_fraction: float = 0.2
    """Fraction of the last layers whose directions are never accepted."""
    fallback: bool = True
    """With the rdo finder: keep the DIM anchor when it passes the filters and the RDO direction does not."""

    def __post_init__(self) -> None:
        if min(self.n_prompts, self.n_val) < 1:
            raise SettingError(
                f"The search needs n_prompts and n_val of at least 1, got {self.n_prompts}, {self.n_val}."
            )
        if not 0 <= self.prune_layer_fraction < 1:
            raise SettingError(f"prune_layer_fraction must lie in [0, 1), got {self.prune_layer_fraction}.")


@dataclass
class LatentTrainingSettings:
    """Latent adversarial training (`mechrefusal.train.adversary`): in every round after round 0, each
    safety micro-batch is trained under a residual perturbation that the latent attack's PGD finds for it."""

    epsilon: float = 0.0
    """Per-token L2 bound of the perturbation, as a fraction of the layer's median residual norm over each
    prompt, as in the latent attack (0: no latent adversarial training)."""
    steps: int = 4
    """PGD steps of the inner optimisation per micro-batch."""
    step_size: float = 0.25
    """PGD step, as a fraction of the bound."""
    layers: str = ""
    """Blocks whose input is perturbed, comma-separated ('': the first trained layer)."""
    objective: str = choice("compliance", ("compliance", "refusal"))
    """What the perturbation optimises: compliance (lower the loss of the rule-made "Sure, here is ..."
    target, as the latent attack does) or refusal (raise the loss of the example's own refusal)."""

    def __post_init__(self) -> None:
        if self.epsilon < 0:
            raise SettingError(f"latent epsilon must be positive (or 0: off), got {self.epsilon}.")
        if self.steps < 1 or self.step_size <= 0:
            raise SettingError(
                f"latent steps must be at least 1 and step_size positive, got {self.steps} and {self.step_size}."
            )
        if self.objective not in ("compliance", "refusal"):
            raise SettingError(f"Unknown latent objective {self.objective!r}; choose compliance or refusal.")
        self.layer_list()

    def layer_list(self) -> tuple[int, ...]:
        """The perturbed blocks (empty: the first trained layer)."""
        try:
            return tuple(int(layer) for layer in self.layers.split(",") if layer.strip())
        except ValueError:
            raise SettingError(f"latent layers must be comma-separated block indices, got {self.layers!r}.") from None


@dataclass
class TrainSettings:
    """Settings of a training job (the CLI flags have the same names)."""

    method: str = registered("fail-closed", METHODS)
    """sft (round 0 only), fail-closed (progressive ablation), refat or deeprefusal (baselines), or any
    'package.module:Class' training method (mechrefusal.train.METHODS)."""
    model: str | None = None
    """Model spec for `mechrefusal.load` (default: the embedded SmolLM2-135M-Instruct)."""
    out: str = "runs/train"
    """Directory for the checkpoints, one sub-directory per round."""
    n_examples: int = 0
    """Training prompts per set, harmful and harmless (0: the whole train split)."""
    public_harmful: str = ""
    """A public harmful set (advbench or harmbench, `mechrefusal.data.PUBLIC_SETS`) whose prompts join the
    team's harmful train split, from round 0 on ('': the team's prompts only). The other public set stays
    held out for evaluation (analyses/public_refusal.py refuses to score a set a checkpoint trained on)."""
    public_share: float = 0.0
    """With public_harmful: the share of the harmful train prompts the public set makes up, reached by a
    seeded sample of its prompts (0: all of them; AdvBench is then 71%), so that the team's phrasings keep
    their weight."""
    public_seed: int | None = None
    """With public_share: the seed that draws the public sample (default: `seed`), so that one sample can be
    trained with several seeds and the two draws told apart."""
    rounds: int = 3
    """Rounds after round 0 (fail-closed, refat and deeprefusal; sft trains round 0 only)."""
    steps: int = 50
    """Optimiser steps per round (at most; rounds stop early on a plateau)."""
    batch_size: int = 16
    """Effective batch: examples per optimiser step, half harmful and half harmless."""
    grad_accumulation: int = 1
    """Micro-batches per optimiser step (each of batch_size / grad_accumulation examples)."""
    lr: float = 1e-4
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    utility_weight: float = 1.0
    """Weight of the utility loss (KL from the original model on harmless examples)."""
    train_layers: str = "all"
    """Decoder layers trained, as start:stop ('' or 'all': every layer). On CPU a band such as 10:20
    is much cheaper (the backward pass stops at its first layer)."""
    lora_rank: int = 0
    """LoRA (peft) rank of adapters on every linear map of the trained layers; 0 trains the layers'
    weights themselves (full fine-tuning). Adapters are merged into the weights after each round."""
    evals_per_round: int = 5
    """Evaluations per round; a round stops after `patience` evaluations without improvement."""
    patience: int = 2
    """Evaluations without improvement before a round stops."""
    max_new_tokens: int = 32
    """Tokens of the model's own answers used as training targets."""
    dtype: str = choice("auto", DTYPES)
    """Compute dtype of training and generation: auto (bfloat16 autocast, fp32 master weights, where bf16 is
    fast on this machine; else float32), bfloat16 or float32."""
    device: str = "auto"
    """Device: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N."""
    seed: int = 0
    """Seed of data order and sampling; a round's randomness depends only on (seed, round)."""
    finder: str = registered("rdo", FINDERS)
    """Direction search: the finder, rdo (Refusal Direction Optimisation anchored at the DIM direction,
    as in the paper), dim (difference in means + selection; cheaper) or 'package.module:Class'."""
    judge: str = registered("substring", JUDGES)
    """Judge of the model's own training targets: a registered refusal judge (substring, prefix;
    mechrefusal.JUDGES) or 'package.module:Class'."""
    search: SearchSettings = field(default_factory=SearchSettings)
    """The direction search's prompts and filters (--search-max-kl, ...)."""
    dim: DIMSettings = field(default_factory=DIMSettings)
    """The DIM finder's candidate search (--dim-search, --dim-finalists, ...); RDO's anchor uses it too."""
    rdo: RDOSettings = field(default_factory=RDOSettings)
    """The RDO finder's losses, sizes and optimiser (--rdo-lr, ...); its forward passes take --rdo-dtype,
    not --dtype."""
    plain_share: float = 0.0
    """Fail-closed: probability that a harmful example of a progressive round is trained without the
    ablation (0: every one ablated, the published method, docs/method.md §3). Guards plain refusal
    against erosion."""
    ablated_utility_share: float = 0.0
    """Fail-closed: probability that a harmless example's utility KL in a progressive round is taken with
    the directions ablated (0: none, the published method, docs/method.md §3), so that ablation alone
    cannot cue a refusal."""
    fresh_unconditioned: bool = False
    """Fail-closed: after each round after round 0 also search a direction with nothing ablated (the one a
    re-search attack finds) and add it to the ablated set beside the conditioned one (docs/method.md §3)."""
    fresh_max_cosine: float = 0.9
    """With fresh_unconditioned: the unconditioned direction is added only when its absolute cosine with
    every saved direction is at most this."""
    subspace_share: float = 0.0
    """Fail-closed: probability that an ablated harmful example of a round after round 0 is trained with a
    random subspace of the directions' span ablated instead of the whole span (docs/method.md §3)."""
    subspace_fresh: int = 0
    """With subspace_share: the best DIM candidates of a search with nothing ablated, found at the start
    of each round, whose directions join the span the random subspaces are drawn from."""
    refresh_every: int = 0
    """Fail-closed: every this many steps of a round after round 0, search the model as it is with nothing
    ablated (the re-search attack, with the trainer's finder and filters) and train a share refresh_share of
    the ablated harmful examples with that direction ablated too (mechrefusal.train.refresh; 0: off)."""
    refresh_share: float = 0.5
    """With refresh_every: the probability that an ablated harmful example also has the refreshed direction
    ablated."""
    consolidation_rounds: int = 0
    """Fail-closed: the last this many rounds search no new direction; they train again against every saved
    one, so that the directions found last are trained against as well (without them the last search's
    directions are saved but never trained against) and the final checkpoint's directions are all trained
    (0: every round searches, the published method)."""
    recovery_share: float = 0.0
    """Every method, rounds after round 0: probability that a harmful example whose prompt the reference
    model answered (not refused) is trained as a recovery example: its reply opens with 1 to
    recovery_tokens tokens of that answer, untrained, then the refusal (mechrefusal.train.recovery; a
    defence against prefilling)."""
    recovery_tokens: int = 24
    """With recovery_share: the longest compliant opening of a recovery example, in tokens."""
    edgy_share: float = 0.0
    """Every method, rounds after round 0: the share of the utility examples that are safe-but-edgy
    (over-refusal) prompts with the reference model's answers, reached by repeating them (0: their share in
    the train split, about a fifth). A guard against over-refusal."""
    latent: LatentTrainingSettings = field(default_factory=LatentTrainingSettings)
    """Latent adversarial training (--latent-epsilon, --latent-steps, ...; epsilon 0: off)."""
    refat_every: int = 4
    """ReFAT: steps between re-estimates of the per-layer directions."""
    ablation_probability: float = 0.5
    """ReFAT: probability that a harmful example is trained with the directions ablated;
    DeepRefusal: probability of ablating at each site and position."""
    parallel: str = choice("ddp", PARALLEL)
    """Under torchrun: ddp (DistributedDataParallel, a full replica per process) or fsdp (FSDP2: the
    weights, gradients and AdamW state sharded over the processes, one unit per decoder layer)."""
    activation_checkpointing: bool = False
    """Keep only each decoder layer's input during the forward pass and recompute the rest in the
    backward pass: activation memory of one layer instead of all, for about a third more compute."""
    resume: bool = False
    """Continue from the last complete round in `out` (same settings, except that `rounds` may grow to train
    more rounds after a finished run and the run may have been moved)."""
    start_from: str | None = None
    """A round-0 checkpoint trained with the same settings (any method) to start from instead of
    training round 0 again: methods compared on one budget share their round 0. Copied into `out`."""

    def __post_init__(self) -> None:
        METHODS.get(self.method)(self)  # a method checks the settings it depends on
        FINDERS.get(self.finder)
        refusal_judge(self.judge)
        if not 0 <= self.plain_share < 1:
            raise SettingError(f"plain_share must lie in [0, 1), got {self.plain_share}.")
        if not 0 <= self.ablated_utility_share <= 1 or not 0 <= self.ablation_probability <= 1:
            raise SettingError(
                f"ablated_utility_share and ablation_probability must lie in [0, 1]; got "
                f"{self.ablated_utility_share} and {self.ablation_probability}."
            )
        if not 0 <= self.subspace_share <= 1 or self.subspace_fresh < 0 or not 0 < self.fresh_max_cosine <= 1:
            raise SettingError(
                f"subspace_share must lie in [0, 1], subspace_fresh be 0 or more and fresh_max_cosine lie in "
                f"(0, 1]; got {self.subspace_share}, {self.subspace_fresh} and {self.fresh_max_cosine}."
            )
        if not 0 <= self.recovery_share <= 1 or self.recovery_tokens < 1:
            raise SettingError(
                f"recovery_share must lie in [0, 1] and recovery_tokens be 1 or more; got {self.recovery_share} "
                f"and {self.recovery_tokens}."
            )
        if self.recovery_share and self.latent.epsilon and self.latent.objective == "compliance":
            raise SettingError(
                "Latent adversarial training with the compliance objective does not take recovery examples (their "
                "compliant opening sits where the compliance target is aimed); use --latent-objective refusal or "
                "--recovery-share 0."
            )
        if not 0 <= self.edgy_share < 1:
            raise SettingError(f"edgy_share must lie in [0, 1), got {self.edgy_share}.")
        if self.public_harmful and self.public_harmful not in PUBLIC_SETS:
            raise SettingError(
                f"Unknown public harmful set {self.public_harmful!r}; choose one of {', '.join(PUBLIC_SETS)} "
                "(or '' for none)."
            )
        if not 0 <= self.public_share < 1:
            raise SettingError(f"public_share must lie in [0, 1), got {self.public_share}.")
        if self.public_share and not self.public_harmful:
            raise SettingError("public_share samples a public harmful set; name one with --public-harmful advbench.")
        if self.public_seed is not None and not self.public_share:
            raise SettingError("public_seed draws the sample of --public-share; give a share as well.")
        if self.refresh_every < 0 or not 0 <= self.refresh_share <= 1:
            raise SettingError(
                f"refresh_every must be 0 (off) or a number of steps and refresh_share lie in [0, 1]; got "
                f"{self.refresh_every} and {self.refresh_share}."
            )
        if self.refresh_every and self.subspace_share:
            raise SettingError("refresh_every and subspace_share are two plans for the ablated examples; set one.")
        if self.subspace_fresh and not self.subspace_share:
            raise SettingError("subspace_fresh adds candidates to random subspaces; set subspace_share above 0 too.")
        if not 0 <= self.consolidation_rounds <= self.rounds:
            raise SettingError(
                f"consolidation_rounds must lie between 0 and rounds ({self.rounds}), got {self.consolidation_rounds}."
            )
        fail_closed_only = (
            self.fresh_unconditioned,
            self.subspace_share,
            self.refresh_every,
            self.consolidation_rounds,
        )
        if any(fail_closed_only) and self.method != "fail-closed":
            raise SettingError(
                "fresh_unconditioned, subspace_share, refresh_every and consolidation_rounds are fail-closed "
                f"settings; method {self.method!r} does not use them."
            )
        check_dtype(self.dtype)
        resolve_device(self.device)
        if self.lora_rank < 0:
            raise SettingError(f"lora_rank must be 0 (full fine-tuning) or a positive rank, got {self.lora_rank}.")
        if self.parallel not in PARALLEL:
            raise SettingError(f"Unknown parallel mode {self.parallel!r}; choose one of {', '.join(PARALLEL)}.")
        if self.parallel == "fsdp" and self.lora_rank:
            raise SettingError(
                "LoRA trains under --parallel ddp (its frozen base needs no sharding); "
                "--parallel fsdp is for full fine-tuning."
            )
        if self.batch_size % (2 * self.grad_accumulation):
            raise SettingError(
                "batch_size must split evenly into harmful and harmless halves of every "
                f"micro-batch (batch_size={self.batch_size}, grad_accumulation={self.grad_accumulation})."
            )

    def layer_range(self, n_layers: int) -> range:
        """The trained decoder layers."""
        if self.train_layers in ("", "all"):
            return range(n_layers)
        start, _, stop = self.train_layers.partition(":")
        try:
            layers = range(int(start or 0), int(stop) if stop else n_layers)
        except ValueError:
            raise SettingError(f"train_layers must look like 'start:stop', got {self.train_layers!r}.") from None
        if not layers or layers.start < 0 or layers.stop > n_layers:
            raise SettingError(f"train_layers {self.train_layers!r} is outside the model's 0:{n_layers} layers.")
        return layers


def saved_settings(saved: dict) -> dict:
    """A checkpoint's recorded settings (``mechrefusal.json``'s ``"settings"``) with dotted keys, the ones
    it predates at their defaults and those of checkpoints written before the groups under their new names."""
    defaults = flat_settings(asdict(TrainSettings()))
    flat = {RENAMED.get(key, key): value for key, value in flat_settings(saved).items()}
    unknown = sorted(set(flat) - set(defaults))
    if unknown:
        raise SettingError(f"The saved settings hold {', '.join(unknown)}, which this version does not know.")
    return {**defaults, **flat}
