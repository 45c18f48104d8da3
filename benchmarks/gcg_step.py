"""Cost of one GCG step against the plain passes it is made of, side by side, at the CPU preset.

    python benchmarks/gcg_step.py [--model SPEC] [--dtype auto] [--quick]

Prints (targets from the GCG issue):
- GCG step / (one forward and backward over the whole prompt + one forward over the candidate batch)
  (<= 1.3). The plain passes run every token (no prefix cache) and compute logits everywhere, as a naive
  implementation would; the step adds sampling and the re-tokenisation filter and saves through the
  prefix cache and target-position logits. The step here also recomputes the prefix cache, which
  `GCG.optimise` computes once per attack, so the ratio is an upper bound.
- candidates evaluated per second by GCG ÷ by a plain forward pass over the same candidate prompts
  (>= 0.9).
The behaviour is the first HarmBench test behaviour with its rule-made target. ``--quick`` shrinks the
search width and repeats to check that the script runs (its numbers mean little).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import data  # noqa: E402
from mechrefusal.attacks import Behaviour, target_for  # noqa: E402
from mechrefusal.attacks.gcg import GCG  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--quick", action="store_true", help="8 candidates, one repeat: a smoke run")
    args = parser.parse_args()

    model = mechrefusal.load(args.model)
    text = data.load("harmbench", "test")[0]
    behaviour = Behaviour(text, target_for(text))
    overrides = dict(search_width=8, eval_batch_size=8) if args.quick else {}
    attack = GCG.preset("cpu", dtype=args.dtype, progress=False, **overrides)
    repeats = 1 if args.quick else 3

    prompts, suffix = attack.tokenise(model, [behaviour])
    (prompt,) = prompts
    allowed = attack.allowed_tokens(model)
    generator = torch.Generator().manual_seed(0)
    rows = [prompt.before + suffix.tolist() + prompt.after + prompt.target]
    full = torch.tensor(rows, device=model.device)
    n_target = len(prompt.target)
    candidates = attack.sample(torch.randn(len(suffix), len(allowed)), suffix, allowed, generator)
    batch_ids = torch.tensor(
        [prompt.before + row + prompt.after + prompt.target for row in candidates.tolist()], device=model.device
    )
    labels = full[:, -n_target:]

    def gcg_step() -> None:
        with autocast(model, args.dtype):
            caches = [attack.encode_prefix(model, prompt)]
            _, gradient = attack.token_gradient(model, prompts, caches, suffix)
            sampled = attack.sample(gradient, suffix, allowed, generator)
            sampled = sampled[attack.retokenises(model, prompts, sampled)]
            attack.candidate_losses(model, prompts, caches, sampled)

    def plain_forward_backward() -> None:
        with autocast(model, args.dtype):
            embedded = model.hf_model.get_input_embeddings()(full).detach().requires_grad_(True)
            logits = model.bridge(embedded, use_cache=False)
            loss = F.cross_entropy(logits[0, -n_target - 1 : -1].float(), labels[0])
            torch.autograd.grad(loss, embedded)

    def plain_candidates() -> None:
        with torch.no_grad(), autocast(model, args.dtype):
            for start in range(0, len(batch_ids), attack.eval_batch_size):
                model.bridge(batch_ids[start : start + attack.eval_batch_size], use_cache=False)

    def gcg_candidates() -> None:
        with autocast(model, args.dtype):
            attack.candidate_losses(model, prompts, [attack.encode_prefix(model, prompt)], candidates)

    t = {
        name: common.best_time(fn, repeats)
        for name, fn in (
            ("gcg_step_s", gcg_step),
            ("plain_forward_backward_s", plain_forward_backward),
            ("plain_candidates_s", plain_candidates),
            ("gcg_candidates_s", gcg_candidates),
        )
    }
    results = {key: round(value, 4) for key, value in t.items()}
    results["step_over_plain"] = round(t["gcg_step_s"] / (t["plain_forward_backward_s"] + t["plain_candidates_s"]), 3)
    results["candidates_per_s_over_plain"] = round(t["plain_candidates_s"] / t["gcg_candidates_s"], 3)
    shape = f"{len(candidates)} candidates x {batch_ids.shape[1]} tokens"
    print(
        f"GCG step / (forward+backward + candidate forward): {results['step_over_plain']:.3f}  (target <= 1.3; "
        f"{results['gcg_step_s']} s vs {results['plain_forward_backward_s']} + {results['plain_candidates_s']} s, "
        f"{args.dtype}, {shape})"
    )
    print(
        f"GCG candidates/s / plain forward candidates/s: {results['candidates_per_s_over_plain']:.3f}  "
        f"(target >= 0.9; {results['gcg_candidates_s']} s vs {results['plain_candidates_s']} s)"
    )
    config = vars(args) | {"model": args.model or "embedded"} | attack.settings()
    print(common.record("gcg_step", config, results, device=str(model.device)))


if __name__ == "__main__":
    main()
