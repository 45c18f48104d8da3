"""Cost of interventions and of bf16 on the embedded model, measured side by side in one run.

    python benchmarks/interventions.py [--batch 16] [--new-tokens 32]

Prints (targets from the measurement-core issue):
- hooked forward (one direction ablated at every layer and site) / plain bridge forward (<= 1.15);
- hooked generation tokens/s (bridge, KV cache, ablation at every step) / HF generate tokens/s (>= 0.8);
- bf16 autocast speed-up over fp32 for a refusal-score sweep step and for generation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import Ablate, Direction, data  # noqa: E402
from mechrefusal.measure.metrics import last_token_logprobs  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()

    model = mechrefusal.load()
    prompts = data.load("harmful", "test")[: args.batch // 2] + data.load("harmless", "test")[: args.batch // 2]
    batch = model.tokenize(prompts)
    torch.manual_seed(0)
    direction = Direction(torch.randn(model.d_model), 15, -1, "random")
    ablate = Ablate(direction)

    def forward(intervention=None):
        def run():
            with torch.no_grad(), model.intervene(intervention):
                model.logits(batch)

        return run

    def bridge_generate(intervention=None):
        def run():
            with torch.no_grad(), model.intervene(intervention):
                model.bridge.generate(
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    max_new_tokens=args.new_tokens,
                    do_sample=False,
                    stop_at_eos=False,
                    use_past_kv_cache=True,
                    return_type="tokens",
                    verbose=False,
                )

        return run

    def hf_generate():
        with torch.no_grad():
            model.hf_model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=model.pad_token_id,
                use_cache=True,
            )

    def sweep_step(dtype):
        def run():
            with autocast(model, dtype):
                last_token_logprobs(model, prompts, intervention=ablate, batch_size=args.batch)

        return run

    def generation(dtype):
        def run():
            with autocast(model, dtype):
                bridge_generate(ablate)()

        return run

    tokens = args.batch * args.new_tokens
    t = {
        "plain_forward_s": common.best_time(forward()),
        "hooked_forward_s": common.best_time(forward(ablate)),
        "hf_generate_s": common.best_time(hf_generate, repeats=2),
        "hooked_generate_s": common.best_time(bridge_generate(ablate), repeats=2),
        "sweep_fp32_s": common.best_time(sweep_step("float32")),
        "sweep_bf16_s": common.best_time(sweep_step("bfloat16")),
        "generate_fp32_s": common.best_time(generation("float32"), repeats=2),
        "generate_bf16_s": common.best_time(generation("bfloat16"), repeats=2),
    }
    results = {key: round(value, 3) for key, value in t.items()}
    results.update(
        {
            "hooked_over_plain_forward": round(t["hooked_forward_s"] / t["plain_forward_s"], 3),
            "hooked_generate_tokens_per_s": round(tokens / t["hooked_generate_s"], 1),
            "hf_generate_tokens_per_s": round(tokens / t["hf_generate_s"], 1),
            "hooked_over_hf_generate_throughput": round(t["hf_generate_s"] / t["hooked_generate_s"], 3),
            "bf16_speedup_sweep": round(t["sweep_fp32_s"] / t["sweep_bf16_s"], 3),
            "bf16_speedup_generate": round(t["generate_fp32_s"] / t["generate_bf16_s"], 3),
        }
    )
    print(f"hooked forward / plain bridge forward: {results['hooked_over_plain_forward']:.3f}  (target <= 1.15)")
    print(
        f"hooked generation / HF generate, tokens/s: {results['hooked_over_hf_generate_throughput']:.3f}  "
        f"({results['hooked_generate_tokens_per_s']} vs {results['hf_generate_tokens_per_s']}; target >= 0.8)"
    )
    print(
        f"bf16 speed-up over fp32: sweep {results['bf16_speedup_sweep']:.2f}x, "
        f"generation {results['bf16_speedup_generate']:.2f}x"
    )
    print(
        common.record(
            "interventions",
            {
                "batch": args.batch,
                "new_tokens": args.new_tokens,
                "model": "embedded",
                "ablation": "1 random direction, every layer and site",
            },
            results,
        )
    )


if __name__ == "__main__":
    main()
