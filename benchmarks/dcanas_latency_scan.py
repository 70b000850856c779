"""Measure every NAS-Bench-201 network whose latency-table estimate is near a budget: is there a network inside it?

The latency of an NB201 network depends on the multiset of its six ops (every edge has the same shape), so the
space has 210 distinct networks for a latency budget. This script takes one cell per multiset whose table
estimate lies within ``[--low, --high] x --budget_ms``, measures the whole network with onnxruntime (1 thread,
best of 3 medians of 100 runs, as the latency fit does) and writes estimate and measurement per network, so
one can see which fractions of the budget the device can reach at all.

    python benchmarks/dcanas_latency_scan.py --table benchmarks/results/<run>_latency_table.json --budget_ms 2.06
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="latency table measured on this machine (hf-compress nas lut)")
    parser.add_argument("--budget_ms", type=float, required=True)
    parser.add_argument("--low", type=float, default=0.75)
    parser.add_argument("--high", type=float, default=1.15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "dcanas_nb201_latency_scan.json"))
    args = parser.parse_args()

    import torch

    import hf_compress.nas  # noqa: F401
    from hf_compress.nas.constraint import CostModel, final_network_config
    from hf_compress.nas.latency import LatencyTable, measure_network_latency
    from hf_compress.nas.latency_fit import require_this_device
    from hf_compress.nas.spaces import NB201Genotype

    torch.set_num_threads(args.threads)
    table = LatencyTable.load(args.table)
    require_this_device(table)
    model = CostModel.for_space("nb201", "latency", table)
    ops = model.space.ops
    cells = []
    for combo in itertools.combinations_with_replacement(range(len(ops)), 6):
        genotype = NB201Genotype.from_ops([ops[i] for i in combo])
        estimate = model.derived(genotype)
        if args.low * args.budget_ms <= estimate <= args.high * args.budget_ms:
            cells.append((genotype, estimate))
    rows = []
    started = time.perf_counter()
    for genotype, estimate in sorted(cells, key=lambda c: c[1]):
        ms = measure_network_latency(final_network_config("nb201", genotype=genotype), "onnxruntime", repeats=100,
                                     warmup=20, threads=args.threads, rounds=3)
        rows.append({"genotype": str(genotype), "estimated_ms": estimate, "measured_ms": ms,
                     "estimated_over_budget": estimate / args.budget_ms, "measured_over_budget": ms / args.budget_ms})
        print(f"{estimate / args.budget_ms:6.3f} -> {ms / args.budget_ms:6.3f}  {genotype}", flush=True)
    measured = sorted(r["measured_over_budget"] for r in rows)
    result = {"table": args.table, "budget_ms": args.budget_ms, "window": [args.low, args.high],
              "networks": len(rows), "seconds": time.perf_counter() - started, "threads": args.threads,
              "measured_over_budget_sorted": measured,
              "inside_0.92_0.98": sum(0.92 <= m <= 0.98 for m in measured),
              "inside_0.90_1.00": sum(0.90 <= m <= 1.00 for m in measured), "rows": rows}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
