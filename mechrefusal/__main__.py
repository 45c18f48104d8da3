"""`python -m mechrefusal [SPEC] [--n N]`: load a model and print a short refusal measurement."""

from __future__ import annotations

import json
import time

import mechrefusal
from mechrefusal import data
from mechrefusal.core.cli import SettingsParser, add_device_argument
from mechrefusal.core.errors import MechrefusalError
from mechrefusal.core.provenance import versions


def main(argv: list[str] | None = None) -> None:
    parser = SettingsParser(prog="python -m mechrefusal", description=__doc__)
    parser.add_argument("spec", nargs="?", default=None, help="model spec (default: the embedded SmolLM2)")
    parser.add_argument("--n", type=int, default=32, help="prompts per set from the test splits (default 32)")
    add_device_argument(parser)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        model = mechrefusal.load(args.spec, device=args.device)
    except MechrefusalError as error:
        parser.error(str(error))
    print(f"loaded {model} in {time.perf_counter() - start:.1f} s")
    tokens = model.tokenizer.convert_ids_to_tokens(list(model.chat.post_instruction_ids))
    print(f"post-instruction tokens {tokens} at positions {model.post_instruction_positions}")
    scores = {}
    for name in ("harmful", "harmless"):
        prompts = data.load(name, "test")[: args.n]
        scores[name] = mechrefusal.refusal_score(model, prompts).mean().item()
        print(f"mean refusal score on {len(prompts)} {name} test prompts: {scores[name]:+.3f}")
    print(json.dumps({"model": model.spec, "refusal_score": scores, "versions": versions()}))


if __name__ == "__main__":
    main()
