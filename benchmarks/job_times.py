"""Wall time of the two jobs a user waits for, on the embedded model: the analysis job and one
progressive round of the trainer (training, direction search and checkpoint), each as its own process.

    python benchmarks/job_times.py --round-zero runs/r0/round-0 [--out /tmp/job-times] [--skip analyze]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/job_times.py ...   # a slow-bf16 CPU

Targets (hardware issue), on 2 CPU cores without fast bf16: the analysis job <= 10 minutes, a round
<= 6 minutes. The round continues ``--round-zero`` (a round-0 checkpoint of the README's configuration)
with ``--start-from``, so it is the cost of round 1 of a fail-closed run; its flags are printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from mechrefusal.core.precision import resolve  # noqa: E402

ROUND_FLAGS = [
    "--method",
    "fail-closed",
    "--rounds",
    "1",
    "--finder",
    "dim",
    "--plain-share",
    "0.25",
    "--ablated-utility-share",
    "0.5",
    "--utility-weight",
    "8",
    "--max-kl",
    "0.6",
    "--min-induce",
    "-10",
    "--train-layers",
    "10:20",
]
"""The README's fail-closed configuration (its round 0 is what ``--round-zero`` must hold)."""


def timed(command: list[str]) -> float:
    """Run ``command`` and return its wall time; its output goes to this process's stderr."""
    print("$", " ".join(command), file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=sys.stderr)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-zero", help="round-0 checkpoint of the README's configuration")
    parser.add_argument("--out", default="/tmp/mechrefusal-job-times")
    parser.add_argument("--skip", choices=("analyze", "round"), action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    results = {}
    if "analyze" not in args.skip:
        seconds = timed([sys.executable, "-m", "mechrefusal.analyze", "--out", str(out / "analysis")])
        report = json.loads((out / "analysis" / "report.json").read_text())
        results |= {
            "analyze_s": round(seconds, 1),
            "analyze_over_target": round(seconds / 600, 3),
            "analyze_precision": report["precision"],
        }
    if "round" not in args.skip and args.round_zero:
        command = [
            sys.executable,
            "-m",
            "mechrefusal.train",
            *ROUND_FLAGS,
            "--start-from",
            args.round_zero,
            "--out",
            str(out / "round"),
        ]
        seconds = timed(command)
        meta = json.loads((out / "round" / "round-1" / "mechrefusal.json").read_text())
        results |= {
            "round_process_s": round(seconds, 1),
            "round_s": meta["wall_time_s"],
            "round_over_target": round(meta["wall_time_s"] / 360, 3),
            "round_training_s": meta["metrics"]["training"]["wall_time_s"],
            "round_precision": meta["precision"],
            "round_flags": ROUND_FLAGS,
        }
    for key, value in results.items():
        if key.endswith("_over_target"):
            print(f"{key}: {value} (target <= 1)")
    print(common.record("job_times", {"model": "embedded", "dtype": "auto"}, results))
    print(f"resolved: {resolve('auto', 'cpu').reason}", file=sys.stderr)


if __name__ == "__main__":
    main()
