"""Cost of one step of the embedding-space and latent attacks against one plain forward and backward pass
over the same tokens, side by side, at the CPU presets.

    python benchmarks/whitebox_step.py [--model SPEC] [--dtype auto] [--quick]

Prints (target from the white-box attack issue: <= 1.2 each):
- embedding attack step / (one forward and backward over prompt + suffix + target);
- latent attack step / (one forward and backward over prompt + target).
A step is timed as the difference between a run of ``2n`` steps and one of ``n`` steps, divided by ``n``, so
the one-off work of a run (tokenising, the latent attack's residual norms, the final evaluation of the
stored vectors) is left out. The plain pass runs every token, computes logits everywhere and takes the
gradient with respect to the input embeddings, as a naive implementation would. The behaviour is the
first HarmBench test behaviour with its rule-made target. ``--quick`` runs fewer steps once (its numbers
mean little).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import data  # noqa: E402
from mechrefusal.attacks import Behaviour, target_for  # noqa: E402
from mechrefusal.attacks.embedding import EmbeddingAttack  # noqa: E402
from mechrefusal.attacks.latent import LatentAttack  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--quick", action="store_true", help="2 and 4 steps, one repeat: a smoke run")
    args = parser.parse_args()

    model = mechrefusal.load(args.model)
    text = data.load("harmbench", "test")[0]
    behaviour = Behaviour(text, target_for(text))
    n, repeats = (2, 1) if args.quick else (8, 3)
    attacks = {
        "embedding": EmbeddingAttack.preset("cpu", dtype=args.dtype, progress=False),
        "latent": LatentAttack.preset("cpu", dtype=args.dtype, progress=False),
    }
    prompts = {"embedding": behaviour.text + " " + " ".join(["!"] * attacks["embedding"].suffix_length)}
    prompts["latent"] = behaviour.text

    def forward_backward(prompt: str) -> None:
        batch = model.tokenize_replies([prompt], [behaviour.target], end_of_turn=False)
        n_target = int(batch.reply_mask.sum())
        with autocast(model, args.dtype):
            embedded = model.hf_model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
            logits = model.bridge(embedded, use_cache=False)
            loss = F.cross_entropy(logits[0, -n_target - 1 : -1].float(), batch.input_ids[0, -n_target:])
            torch.autograd.grad(loss, embedded)

    results: dict[str, float] = {}
    for name, attack in attacks.items():
        short, long = (type(attack).preset("cpu", dtype=args.dtype, progress=False, steps=s) for s in (n, 2 * n))
        t_short = common.best_time(partial(short.run, model, behaviour), repeats)
        t_long = common.best_time(partial(long.run, model, behaviour), repeats)
        t_plain = common.best_time(partial(forward_backward, prompts[name]), repeats)
        step = (t_long - t_short) / n
        tokens = model.tokenize_replies([prompts[name]], [behaviour.target], end_of_turn=False).input_ids.shape[1]
        results |= {
            f"{name}_step_s": round(step, 4),
            f"{name}_plain_forward_backward_s": round(t_plain, 4),
            f"{name}_step_over_plain": round(step / t_plain, 3),
            f"{name}_tokens": tokens,
        }
        print(
            f"{name} attack step / (forward+backward): {step / t_plain:.3f}  (target <= 1.2; {step:.4f} s vs "
            f"{t_plain:.4f} s, {args.dtype}, {tokens} tokens)"
        )
    config = (
        vars(args)
        | {"model": args.model or "embedded", "n_steps": n}
        | {name: attack.settings() for name, attack in attacks.items()}
    )
    print(common.record("whitebox_step", config, results, device=str(model.device)))


if __name__ == "__main__":
    main()
