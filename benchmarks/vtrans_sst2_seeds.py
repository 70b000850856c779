"""Pool `vtrans_sst2.py` results over seeds: mean and spread per method and budget, and paired differences to VTrans.

One run of each method is within run-to-run noise of the others at some budgets, so the issue targets ("VTrans above
the baseline", "Faster-VTrans within 2 points at 10x") are judged on seed means. Only runs made with the same settings
(teacher, data, epochs, overrides) are pooled; a method repeated for the same seed and budget takes the row of the file
given last (e.g. a rerun on a quiet machine), and the script says so.

    python benchmarks/vtrans_sst2_seeds.py benchmarks/results/vtrans_sst2_cpu50_fullteacher.json ... --tag cpu_fullteacher
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

# settings that only choose what a run covers or where it writes; everything else must agree to pool two runs
RUN_SELECTION = ("sparsities", "methods", "tag", "out", "cpu_latency_threads", "seed")
DEFAULT_SETTINGS = {"vtrans_overrides": "{}", "faster_overrides": "{}"}  # keys older result files lack


def settings_of(result: dict) -> dict:
    config = {**DEFAULT_SETTINGS, **result["config"]}
    return {k: v for k, v in config.items() if k not in RUN_SELECTION}


def collect(paths: list[str]) -> tuple[dict, dict, dict]:
    """(method, sparsity) -> {seed: row}; the shared settings; the teacher's accuracy."""
    runs: dict[tuple[str, float], dict[int, dict]] = {}
    settings = dense = None
    for path in paths:
        with open(path) as handle:
            result = json.load(handle)
        these = settings_of(result)
        if settings is None:
            settings, dense = these, result["dense"]["accuracy"]
        elif these != settings:
            differing = sorted(k for k in set(these) | set(settings) if these.get(k) != settings.get(k))
            sys.exit(f"{path} was run with other settings ({', '.join(differing)}); pool only runs of one setting")
        seed = result["config"]["seed"]
        for row in result["rows"]:
            key = (row["method"], row["target_sparsity"])
            if seed in runs.setdefault(key, {}):
                print(f"{key[0]} @{key[1]:.0%} seed {seed}: the row from {path} replaces an earlier one")
            runs[key][seed] = {**row, "file": os.path.basename(path)}
    if settings is None:
        sys.exit("no result files given")
    return runs, settings, dense


def summarize(runs: dict, dense: float) -> list[dict]:
    summary = []
    for (method, sparsity), by_seed in sorted(runs.items(), key=lambda item: (item[0][1], item[0][0])):
        accuracies = [row["accuracy"] for row in by_seed.values()]
        entry = {
            "method": method,
            "target_sparsity": sparsity,
            "seeds": sorted(by_seed),
            "accuracy_mean": statistics.fmean(accuracies),
            "accuracy_sd": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
            "accuracy_vs_dense_mean": statistics.fmean(accuracies) / dense,
            "compression_seconds_mean": statistics.fmean(row["compression_seconds"] for row in by_seed.values()),
            "accuracy_by_seed": {seed: row["accuracy"] for seed, row in sorted(by_seed.items())},
        }
        reference = runs.get(("vtrans", sparsity), {})
        paired = sorted(set(reference) & set(by_seed))
        if method != "vtrans" and paired:
            # paired over the seeds both have, so a lucky or unlucky seed counts on both sides
            entry["paired_seeds_with_vtrans"] = paired
            entry["minus_vtrans_accuracy_mean"] = statistics.fmean(
                by_seed[s]["accuracy"] - reference[s]["accuracy"] for s in paired)
            entry["speedup_vs_vtrans"] = (sum(reference[s]["compression_seconds"] for s in paired)
                                          / sum(by_seed[s]["compression_seconds"] for s in paired))
        summary.append(entry)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="vtrans_sst2.py result JSON files, all with the same settings")
    parser.add_argument("--tag", required=True, help="writes benchmarks/results/vtrans_sst2_seeds_<tag>.json")
    cli = parser.parse_args()
    runs, settings, dense = collect(cli.files)
    summary = summarize(runs, dense)
    print(f"teacher accuracy {dense:.4f}")
    print(f"{'sparsity':>8} {'method':24} {'seeds':>7} {'mean acc':>9} {'sd':>6} {'% dense':>8} {'s':>6} "
          f"{'vs VTrans (paired)':>19} {'x faster':>8}")
    for e in summary:
        sd = f"{e['accuracy_sd'] * 100:.2f}" if e["accuracy_sd"] is not None else "-"
        diff = (f"{e['minus_vtrans_accuracy_mean'] * 100:+.2f} ({len(e['paired_seeds_with_vtrans'])})"
                if "minus_vtrans_accuracy_mean" in e else "")
        speed = f"{e['speedup_vs_vtrans']:.1f}" if "speedup_vs_vtrans" in e else ""
        print(f"{e['target_sparsity']:>8.0%} {e['method']:24} {len(e['seeds']):>7} {e['accuracy_mean']:>9.4f} {sd:>6} "
              f"{e['accuracy_vs_dense_mean']:>8.1%} {e['compression_seconds_mean']:>6.0f} {diff:>19} {speed:>8}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"vtrans_sst2_seeds_{cli.tag}.json")
    with open(out, "w") as handle:
        json.dump({"benchmark": "vtrans_sst2_seeds", "files": cli.files, "settings": settings,
                   "dense_accuracy": dense, "summary": summary}, handle, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
