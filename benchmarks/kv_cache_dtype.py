"""The KV cache in autocast's dtype (`mechrefusal.measure.generation.ComputeDtypeCache`) against transformers'
own dynamic cache, side by side in one run: greedy generation of the embedded model under bf16 autocast.

    python benchmarks/kv_cache_dtype.py [--n 32] [--tokens 32] [--repeats 4]

Prints the median seconds of each cache (the two alternating after a warm-up), their ratio (below 1: the
compute-dtype cache is faster) and whether the generated tokens are identical (they must be). Only where auto
resolves to bf16: in float32 the two caches are the same.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache, GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import data  # noqa: E402
from mechrefusal.core.memory import keep_freed_memory  # noqa: E402
from mechrefusal.measure.generation import ComputeDtypeCache  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32, help="harmful test prompts (default: 32)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens (default: 32)")
    parser.add_argument("--repeats", type=int, default=4, help="timed generations per cache (default: 4)")
    args = parser.parse_args()
    common.require_bf16("the two caches are the same.")
    keep_freed_memory()
    model = mechrefusal.load()
    batch = model.tokenize(data.load("harmful", "test")[: args.n])
    eos = model.tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=args.tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos)

    def generation(cache: type[DynamicCache]) -> list[list[int]]:
        with torch.no_grad(), autocast(model, "auto"):
            tokens = model.hf_model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                generation_config=config,
                past_key_values=cache(config=model.hf_model.config),
            )
        return tokens.tolist()

    caches = {"compute dtype": ComputeDtypeCache, "transformers": DynamicCache}
    outputs = {name: generation(cache) for name, cache in caches.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in caches}
    for _ in range(args.repeats):
        for name, cache in caches.items():
            started = time.perf_counter()
            generation(cache)
            times[name].append(time.perf_counter() - started)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    ratio = seconds["compute dtype"] / seconds["transformers"]
    identical = outputs["compute dtype"] == outputs["transformers"]
    print(
        f"compute-dtype cache {seconds['compute dtype']:.3f} s, transformers' {seconds['transformers']:.3f} s: "
        f"{ratio:.2f}x, identical: {identical}"
    )
    results = {
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "ratio": round(ratio, 3),
        "identical": identical,
    }
    print(common.record("kv_cache_dtype", vars(args) | {"dtype": "auto", "model": "embedded"}, results))


if __name__ == "__main__":
    main()
