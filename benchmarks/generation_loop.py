"""Greedy generation through the bridge's own decoding loop against the toolkit's (`generate_ids`:
transformers' loop over the bridged modules), side by side in one run, with an ablation active.

    python benchmarks/generation_loop.py [--model SPEC] [--dtype auto] [--n 64] [--tokens 32] [--quick]

Prints the time of each, the ratio toolkit / bridge (below 1: the toolkit's loop is faster) and how many
replies are the same token for token (all of them, or the toolkit's loop is wrong). The prompts are the
first ``--n`` harmful test prompts; the ablated direction is random (seeded) at the middle layer; each time
is the best of ``repeats`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import Ablate, Direction, data  # noqa: E402
from mechrefusal.measure.generation import generate_ids  # noqa: E402
from mechrefusal.models import Model, autocast  # noqa: E402


def bridge_ids(model: Model, prompts: list[str], tokens: int, intervention: Ablate) -> list[list[int]]:
    """The replies of TransformerBridge.generate (KV cache on), cut at the end-of-sequence token."""
    eos = model.tokenizer.eos_token_id
    replies: list[list[int]] = [[] for _ in prompts]
    with torch.no_grad(), model.intervene(intervention):
        for indices, batch in model.batches(prompts, len(prompts)):
            output = model.bridge.generate(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=tokens,
                do_sample=False,
                eos_token_id=eos,
                use_past_kv_cache=True,
                return_type="tokens",
                verbose=False,
            )
            for index, row in zip(indices, output[:, batch.input_ids.shape[1] :].tolist()):
                replies[index] = row[: row.index(eos)] if eos in row else row
    return replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--n", type=int, default=64, help="prompts generated, one batch (default: 64)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per prompt (default: 32)")
    parser.add_argument("--quick", action="store_true", help="8 prompts, 4 tokens, one repeat: a smoke run")
    args = parser.parse_args()
    n, tokens, repeats = (8, 4, 1) if args.quick else (args.n, args.tokens, 3)

    model = mechrefusal.load(args.model)
    prompts = data.load("harmful", "test")[:n]
    generator = torch.Generator().manual_seed(0)
    direction = Direction(torch.randn(model.d_model, generator=generator), model.n_layers // 2, -1, "random")
    ablation = Ablate([direction])
    runs = {
        "bridge": partial(bridge_ids, model, prompts, tokens, ablation),
        "toolkit": partial(generate_ids, model, prompts, max_new_tokens=tokens, intervention=ablation),
    }
    with autocast(model, args.dtype):
        times = {name: common.best_time(run, repeats) for name, run in runs.items()}
        same = sum(a == b for a, b in zip(runs["bridge"](), runs["toolkit"]()))
    ratio = times["toolkit"] / times["bridge"]
    print(
        f"toolkit loop / bridge loop: {ratio:.2f}  ({times['toolkit']:.2f} s vs {times['bridge']:.2f} s; "
        f"{len(prompts)} prompts x {tokens} tokens, {args.dtype}); identical replies {same}/{len(prompts)}"
    )
    results = {f"{name}_s": round(seconds, 2) for name, seconds in times.items()}
    results |= {"ratio": round(ratio, 3), "identical": same}
    config = vars(args) | {"model": args.model or "embedded", "n_prompts": len(prompts), "repeats": repeats}
    print(common.record("generation_loop", config, results, device=str(model.device)))


if __name__ == "__main__":
    main()
