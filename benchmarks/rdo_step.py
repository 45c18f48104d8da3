"""Cost of one RDO optimisation step against one forward and backward of the same examples through the
plain model, side by side.

    python benchmarks/rdo_step.py [--model SPEC] [--batch 8] [--dtype auto]

Prints (target from the RDO issue): RDO step / plain step (<= 1.2). The RDO step is the ablation,
addition and retain losses on ``--batch`` (harmful, harmless) example pairs and the backward to the
direction, the model frozen; the plain step is the forward and backward of the same replies (harmful
prompts with compliant replies, harmless prompts with their answers and with refusals) with every
weight requiring grad, as a plain fine-tuning step would.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import Direction, data  # noqa: E402
from mechrefusal.directions import RDOSettings  # noqa: E402
from mechrefusal.directions.rdo import Problem, frozen, rdo_loss  # noqa: E402
from mechrefusal.directions.rdo_targets import RDOTargets  # noqa: E402
from mechrefusal.measure.losses import reply_cross_entropy  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402

COMPLIANT = "Sure, here is a detailed answer to your request, step by step, with every detail you asked for."
ANSWER = "Here is a short, clear answer to your question with two examples and a closing remark."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    parser.add_argument("--batch", type=int, default=8, help="example pairs per step (one micro-batch)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    args = parser.parse_args()

    model = mechrefusal.load(args.model)
    harmful, harmless = data.load("harmful", "train")[: args.batch], data.load("harmless", "train")[: args.batch]
    refusals = [reply.split(".")[0] + "." for reply in data.refusal_replies()[: args.batch]]
    targets = RDOTargets(harmful, [COMPLIANT] * args.batch, harmless, refusals, [ANSWER] * args.batch, key="")
    torch.manual_seed(0)
    direction = Direction(torch.randn(model.d_model), int(0.6 * model.n_layers), -1, "random")
    problem = Problem(targets, 10.0, direction.layer, direction.position, RDOSettings(dtype=args.dtype))
    indices = list(range(args.batch))

    def rdo_step():
        r = direction.unit.to(model.device).requires_grad_(True)
        with frozen(model), autocast(model, args.dtype):
            rdo_loss(model, r, problem, indices)["total"].backward()

    def plain_step():
        model.hf_model.zero_grad(set_to_none=True)
        # The same replies, tokenised and grouped as the RDO step does: one batch to ablate, one to add to.
        batches = [
            model.tokenize_replies(harmful + harmless, [COMPLIANT] * args.batch + [ANSWER] * args.batch),
            model.tokenize_replies(harmless, refusals),
        ]
        with autocast(model, args.dtype):
            for batch in batches:
                logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
                reply_cross_entropy(logits[:, batch.predictions], batch).mean().backward()

    for parameter in model.bridge.parameters():
        parameter.requires_grad_(True)
    t = {"rdo_step_s": common.best_time(rdo_step), "plain_step_s": common.best_time(plain_step)}
    results = {key: round(value, 4) for key, value in t.items()}
    results["rdo_over_plain"] = round(t["rdo_step_s"] / t["plain_step_s"], 3)
    print(
        f"RDO step / plain forward+backward: {results['rdo_over_plain']:.3f}  (target <= 1.2; "
        f"{results['rdo_step_s']} s vs {results['plain_step_s']} s, {args.dtype}, {args.batch} pairs)"
    )
    print(common.record("rdo_step", vars(args) | {"model": args.model or "embedded"}, results))


if __name__ == "__main__":
    main()
