"""Utility of a model under an intervention, the way the paper measures it: zero-shot multiple-choice accuracy
through the lm-evaluation-harness (the paper's tasks where their data is on the machine, the bundled local
tasks always), cross-entropy and KL against a reference model on its own held-out harmless answers, and
over-refusal (`overrefusal.compliance` on the safe-but-edgy and the harmless test prompts).

`measure_utility` is the entry point; `ModelLM` is the harness adapter: it scores ``(context, continuation)``
requests through `Model.reply_logits`, so the model's TransformerLens hooks (and any intervention) are active.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import datasets
import lm_eval
import torch
import yaml
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager
from tqdm.auto import tqdm

from mechrefusal import data
from mechrefusal.core.cache import atomic_write_bytes, home
from mechrefusal.core.errors import DataError, SettingError
from mechrefusal.interventions import Interventions
from mechrefusal.measure.generation import generate
from mechrefusal.measure.losses import reply_cross_entropy, reply_kl, reply_targets
from mechrefusal.measure.overrefusal import compliance
from mechrefusal.models import Model, ReplyBatch
from mechrefusal.models.autocast import autocast
from mechrefusal.models.export import weights_digest

PAPER_TASKS = {
    "boolq": "super_glue/boolq",
    "rte": "glue/rte",
    "hellaswag": "hellaswag",
    "winogrande": "winogrande",
    "arc_challenge": "arc",
    "openbookqa": "openbookqa",
}
"""The paper's zero-shot tasks and the folder of each one's config inside the installed ``lm_eval/tasks``."""

LOCAL_DIR = Path(str(resources.files("mechrefusal.data"))) / "bundled" / "utility"
LOCAL_TASKS = ("local_commonsense", "local_science")
"""Multiple-choice tasks written for this project and shipped with it (``data/bundled/utility/*.yaml``)."""

DEFAULT_TASKS = (*PAPER_TASKS, *LOCAL_TASKS)


def local_tasks_digest() -> str:
    """A hash of the local tasks' files (configs, questions and answers): what a cached accuracy on them
    depends on besides its settings."""
    digest = hashlib.sha256()
    for path in sorted(LOCAL_DIR.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class ModelLM(LM):
    """A `Model` as an lm-evaluation-harness language model that scores continuations (multiple choice).

    Text is scored raw (no chat template), as the harness scores base models; the intervention is applied
    through ``model.intervene``, so every forward pass runs the bridge's hooks.
    """

    def __init__(
        self,
        model: Model,
        intervention: Interventions = None,
        *,
        batch_size: int = 16,
        dtype: str = "auto",
        progress: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise SettingError(f"batch_size must be at least 1, got {batch_size}.")
        self.model, self.intervention = model, intervention
        self.batch_size, self.dtype, self.progress = batch_size, dtype, progress

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """For each ``(context, continuation)``: the sum of the continuation tokens' log-probabilities and
        whether greedy decoding would produce exactly those tokens."""
        pairs = [self._encode(*request.args) for request in requests]
        order = sorted(range(len(pairs)), key=lambda i: -sum(map(len, pairs[i])))
        results: list[tuple[float, bool]] = [(math.nan, False)] * len(pairs)
        starts = range(0, len(order), self.batch_size)
        with torch.no_grad(), autocast(self.model, self.dtype), self.model.intervene(self.intervention):
            for start in tqdm(starts, desc="loglikelihood", disable=not self.progress, leave=False):
                indices = order[start : start + self.batch_size]
                for index, result in zip(indices, self._score([pairs[i] for i in indices])):
                    results[index] = result
        return results

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        raise SettingError(_unsupported("loglikelihood_rolling (perplexity)"))

    def generate_until(self, requests: list[Instance]) -> list[str]:
        raise SettingError(_unsupported("generate_until (generation)"))

    def _encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation token ids, split as the harness does: the continuation's tokens are those
        of ``context + continuation`` past the context's, with any trailing spaces of the context moved over;
        an empty context is the beginning-of-sequence token (end-of-sequence where there is none)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        tokenizer = self.model.tokenizer
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
        continuation_ids = whole[len(context_ids) :]
        if not continuation_ids:
            raise SettingError(f"The continuation {continuation!r} is empty once tokenized; nothing to score.")
        if not context_ids:
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            context_ids = [start]
        return context_ids, continuation_ids

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        width = max(len(context) + len(continuation) for context, continuation in pairs)
        input_ids = torch.full((len(pairs), width), self.model.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
        reply_mask = torch.zeros((len(pairs), width), dtype=torch.bool)
        for row, (context, continuation) in enumerate(pairs):
            input_ids[row, : len(context) + len(continuation)] = torch.tensor(context + continuation)
            attention_mask[row, : len(context) + len(continuation)] = 1
            reply_mask[row, len(context) : len(context) + len(continuation)] = True
        device = self.model.device
        batch = ReplyBatch(input_ids.to(device), attention_mask.to(device), reply_mask.to(device))
        logits = self.model.reply_logits(batch).float()
        targets, predicted = reply_targets(batch)
        logprobs = logits.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sums = (logprobs * predicted).sum(dim=1)
        greedy = ((logits.argmax(dim=-1) == targets) | ~predicted).all(dim=1)
        return [(float(s), bool(g)) for s, g in zip(sums.tolist(), greedy.tolist())]


def _unsupported(kind: str) -> str:
    return (
        f"ModelLM scores multiple-choice tasks (loglikelihood requests) only; this task asks for {kind}, "
        "which it does not support."
    )


@dataclass(frozen=True)
class TaskScore:
    """Zero-shot accuracy on one task: ``accuracy`` with its standard error, length-normalised accuracy where
    the task reports it, and ``n`` items scored."""

    accuracy: float
    stderr: float
    n: int
    accuracy_norm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "stderr": self.stderr, "n": self.n, "accuracy_norm": self.accuracy_norm}


@dataclass(frozen=True, repr=False)
class Utility:
    """What `measure_utility` measured; `to_dict` gives the ``utility.json`` a pipeline saves.

    Keys of `to_dict` (stable):
        ``model``, ``reference``: the two models' specs; ``intervention``: its repr, or null;
        ``tasks``: ``{task: {"accuracy", "stderr", "n", "accuracy_norm"}}`` (``accuracy_norm`` null where the
        task has none); ``skipped``: ``{task: one-sentence reason}``;
        ``cross_entropy``: mean per-token cross-entropy (nats) of the model on the reference's greedy answers
        to the harmless test prompts; ``reference_cross_entropy``: the reference's own (equal to it when the
        model is the reference without intervention); ``kl``: mean per-token KL(reference || model) over
        those answer tokens (0 then); ``answers``, ``answer_tokens``: how many answers and tokens;
        ``harmless_compliance``, ``edgy_compliance``: the share of greedy replies to the harmless and the
        safe-but-edgy (over-refusal) test prompts that are not empty and do not open with a refusal (judge
        ``prefix``);
        ``harmless_n``, ``edgy_n``: how many prompts; ``seconds``: wall time.
    """

    model: str
    reference: str
    intervention: str | None
    tasks: dict[str, TaskScore]
    skipped: dict[str, str]
    cross_entropy: float
    reference_cross_entropy: float
    kl: float
    answers: int
    answer_tokens: int
    harmless_compliance: float
    edgy_compliance: float
    harmless_n: int
    edgy_n: int
    seconds: float = field(compare=False)

    def __repr__(self) -> str:
        accuracies = ", ".join(f"{name}={score.accuracy:.3f}" for name, score in self.tasks.items())
        return (
            f"Utility({accuracies}{', ' if accuracies else ''}skipped={len(self.skipped)}, "
            f"ce={self.cross_entropy:.3f}, kl={self.kl:.4f}, harmless_compliance={self.harmless_compliance:.2f}, "
            f"edgy_compliance={self.edgy_compliance:.2f})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (see the class docstring for the keys)."""
        return {
            "model": self.model,
            "reference": self.reference,
            "intervention": self.intervention,
            "tasks": {name: score.to_dict() for name, score in self.tasks.items()},
            "skipped": dict(self.skipped),
            "cross_entropy": self.cross_entropy,
            "reference_cross_entropy": self.reference_cross_entropy,
            "kl": self.kl,
            "answers": self.answers,
            "answer_tokens": self.answer_tokens,
            "harmless_compliance": self.harmless_compliance,
            "edgy_compliance": self.edgy_compliance,
            "harmless_n": self.harmless_n,
            "edgy_n": self.edgy_n,
            "seconds": self.seconds,
        }


def measure_utility(
    model: Model,
    reference: Model,
    *,
    intervention: Interventions = None,
    tasks: Sequence[str] = DEFAULT_TASKS,
    limit: int | None = None,
    dtype: str = "auto",
    max_new_tokens: int = 32,
    batch_size: int = 8,
    download: bool = False,
    progress: bool = True,
) -> Utility:
    """Utility and over-refusal of ``model`` under ``intervention`` against ``reference`` (the original model).

    ``tasks``: names from `DEFAULT_TASKS` or paths of lm-evaluation-harness YAML task configs; a paper task
    whose data is not on the machine is skipped with its reason (``download=True`` lets the harness fetch it
    from the Hugging Face hub). ``limit`` caps the items per task and the prompts per set (None: all).
    """
    check_tasks(tasks)
    if limit is not None and limit < 1:
        raise SettingError(f"limit must be at least 1 (or None for everything), got {limit}.")
    started = time.perf_counter()
    lm = ModelLM(model, intervention, batch_size=batch_size, dtype=dtype, progress=progress)
    scores, skipped = task_scores(lm, tasks, limit=limit, download=download, progress=progress)
    harmless = data.load("harmless", "test")[:limit]
    edgy = data.load("overrefusal", "test")[:limit]
    answers = reference_answers(reference, harmless, max_new_tokens=max_new_tokens, dtype=dtype, progress=progress)
    divergence = answer_divergence(
        model, reference, harmless, answers, intervention=intervention, batch_size=batch_size, dtype=dtype
    )
    settings: dict[str, Any] = dict(intervention=intervention, max_new_tokens=max_new_tokens, dtype=dtype)
    return Utility(
        model=model.spec,
        reference=reference.spec,
        intervention=None if intervention is None else repr(intervention),
        tasks=scores,
        skipped=skipped,
        cross_entropy=divergence.cross_entropy,
        reference_cross_entropy=divergence.reference_cross_entropy,
        kl=divergence.kl,
        answers=divergence.answers,
        answer_tokens=divergence.tokens,
        harmless_compliance=compliance(model, harmless, progress=progress, **settings),
        edgy_compliance=compliance(model, edgy, progress=progress, **settings),
        harmless_n=len(harmless),
        edgy_n=len(edgy),
        seconds=time.perf_counter() - started,
    )


def check_tasks(tasks: Sequence[str]) -> None:
    """Raise a one-sentence error unless every task is a known name or an existing YAML task config."""
    if isinstance(tasks, str) or not tasks:
        raise SettingError("tasks must be a non-empty list of task names, not a single string or an empty list.")
    for task in tasks:
        if task not in DEFAULT_TASKS and not (str(task).endswith((".yaml", ".yml")) and Path(task).is_file()):
            raise SettingError(
                f"Unknown utility task {task!r}; choose among {', '.join(DEFAULT_TASKS)} or give the path of an "
                "lm-evaluation-harness YAML task config."
            )


def task_scores(
    lm: ModelLM, tasks: Sequence[str], *, limit: int | None = None, download: bool = False, progress: bool = False
) -> tuple[dict[str, TaskScore], dict[str, str]]:
    """Zero-shot accuracy of ``lm`` on each task through ``lm_eval.simple_evaluate``, and the tasks skipped
    (their data not available) with the reason."""
    check_tasks(tasks)
    scores: dict[str, TaskScore] = {}
    skipped: dict[str, str] = {}
    for task in tqdm(tasks, desc="utility tasks", disable=not progress, leave=False):
        manager = _task_manager(task)
        try:
            with _hub(download), _quiet_harness():
                loaded = manager.load([_task_spec(task)])["tasks"]
        except OSError as error:  # datasets raises ConnectionError or FileNotFoundError for missing data
            where = "offline (pass download=True to fetch it)" if not download else "from the hub"
            skipped[task] = f"task {task}'s data is not available {where}: {str(error).splitlines()[0]}"
            continue
        with _quiet_harness():
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(loaded.values()),
                limit=limit,
                bootstrap_iters=100,
                log_samples=False,
                task_manager=manager,  # else the harness indexes all its thousands of task configs
            )
        assert results is not None  # one process: the harness always returns the results on rank 0
        for name, metrics in results["results"].items():
            scores[name] = TaskScore(
                accuracy=float(metrics["acc,none"]),
                stderr=float(metrics["acc_stderr,none"]),
                n=int(results["n-samples"][name]["effective"]),
                accuracy_norm=float(metrics["acc_norm,none"]) if "acc_norm,none" in metrics else None,
            )
    return scores, skipped


def _task_manager(task: str) -> TaskManager:
    """A task manager that indexes only what the task needs (the whole harness takes seconds to index)."""
    if task in PAPER_TASKS:
        return TaskManager(include_defaults=False, include_path=str(_harness_tasks() / PAPER_TASKS[task]))
    return TaskManager(include_defaults=False)


def _harness_tasks() -> Path:
    return Path(str(resources.files("lm_eval"))) / "tasks"


def _task_spec(task: str) -> str | dict[str, Any]:
    """A paper task's name, or a YAML config read with its local ``data_files`` made absolute."""
    if task in PAPER_TASKS:
        return task
    path = LOCAL_DIR / f"{task.removeprefix('local_')}.yaml" if task in LOCAL_TASKS else Path(task)
    config = yaml.safe_load(path.read_text())
    files = config.get("dataset_kwargs", {}).get("data_files")
    if isinstance(files, dict):
        config["dataset_kwargs"]["data_files"] = {split: str(path.parent / name) for split, name in files.items()}
    return config


@contextmanager
def _hub(download: bool) -> Iterator[None]:
    """Unless ``download``, keep the datasets library off the network: data is read from its cache only, and a
    missing dataset fails at once instead of after a minute of retries."""
    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = saved or not download
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved


@contextmanager
def _quiet_harness() -> Iterator[None]:
    """Silence the harness's per-task INFO and WARNING logging (its defaults notes), errors still shown."""
    logger = logging.getLogger("lm_eval")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved)


def reference_answers(
    reference: Model, prompts: Sequence[str], *, max_new_tokens: int = 32, dtype: str = "auto", progress: bool = False
) -> list[str]:
    """The reference model's greedy answers to ``prompts``, cached under ``$MECHREFUSAL_HOME/answers`` by a
    fingerprint of its weights (as the trainer's targets are), its chat format (a system message changes the
    answers) and the settings."""
    digest = weights_digest(reference)
    digest.update(json.dumps([list(prompts), max_new_tokens, dtype, torch.__version__, reference.chat_format]).encode())
    path = home() / "answers" / f"{digest.hexdigest()[:24]}.json"
    if path.exists():
        return json.loads(path.read_text())
    with autocast(reference, dtype):
        answers = generate(reference, prompts, max_new_tokens=max_new_tokens, progress=progress)
    atomic_write_bytes(path, json.dumps(answers).encode())
    return answers


@dataclass(frozen=True)
class Divergence:
    """Mean per-token cross-entropy of the model and of the reference on answer tokens, and KL(reference ||
    model) over them; ``answers`` answers with ``tokens`` tokens in all."""

    cross_entropy: float
    reference_cross_entropy: float
    kl: float
    answers: int
    tokens: int


def answer_divergence(
    model: Model,
    reference: Model,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    intervention: Interventions = None,
    batch_size: int = 8,
    dtype: str = "auto",
) -> Divergence:
    """Cross-entropy and KL of ``model`` under ``intervention`` against ``reference`` (no intervention) on the
    given answers (chat-formatted prompt, then the answer; empty answers left out), per token."""
    model.check_same_tokenizer(reference)
    kept = [(prompt, answer) for prompt, answer in zip(prompts, answers) if answer.strip()]
    if not kept:
        raise DataError("The reference model's answers are all empty, so there is nothing to measure CE and KL on.")
    totals = torch.zeros(3, dtype=torch.float64)  # model CE, reference CE, KL, each summed over tokens
    tokens = 0
    with torch.no_grad(), ExitStack() as stack:
        for one in {id(model): model, id(reference): reference}.values():
            stack.enter_context(autocast(one, dtype))
        for start in range(0, len(kept), batch_size):
            chunk = kept[start : start + batch_size]
            batch = model.tokenize_replies([p for p, _ in chunk], [a for _, a in chunk], end_of_turn=False)
            reference_logits = reference.reply_logits(batch)
            with model.intervene(intervention):
                logits = model.reply_logits(batch)
            counts = batch.reply_mask.sum(dim=1).double()
            per_example = torch.stack(
                [
                    reply_cross_entropy(logits, batch),
                    reply_cross_entropy(reference_logits, batch),
                    reply_kl(logits, reference_logits, batch),
                ]
            ).double()
            totals += (per_example * counts).sum(dim=1).cpu()
            tokens += int(counts.sum())
    cross_entropy, reference_cross_entropy, kl = (totals / tokens).tolist()
    return Divergence(cross_entropy, reference_cross_entropy, kl, len(kept), tokens)
