#!/usr/bin/env python3
"""Sums Nsight Compute's per-kernel times of TestCUDAProfile runs: one
table per profiled point (file profile-<batch>-<adapters>.csv, from
`ncu --metrics gpu__time_duration.sum --csv --print-units base`), kernels
grouped by name and grid, as microseconds per decode step.

  python3 scripts/gpu/kernel_profile.py --steps 3 WORK/profile-*.csv
"""
import argparse
import csv
import os
import re
import sys


def rows(path):
    """The (kernel, grid, block, ns) of every profiled launch in one ncu CSV."""
    with open(path, errors="replace") as f:
        lines = [l for l in f if not l.startswith("==")]
    out = []
    header = None
    for rec in csv.reader(lines):
        if header is None:
            if "Kernel Name" in rec and "Metric Value" in rec:
                header = {name: i for i, name in enumerate(rec)}
            continue
        if len(rec) < len(header) or rec[header["Metric Name"]] != "gpu__time_duration.sum":
            continue
        try:
            ns = float(rec[header["Metric Value"]].replace(",", ""))
        except ValueError:
            continue
        full = rec[header["Kernel Name"]].replace("(anonymous namespace)::", "").strip()
        full = re.sub(r"^void\s+", "", full)
        name = re.split(r"[(<]", full, 1)[0].split("::")[-1].strip() or full[:40]
        out.append((name, rec[header.get("Grid Size", 0)], rec[header.get("Block Size", 0)], ns))
    return out


def main():
    ap = argparse.ArgumentParser(description="per-kernel times per decode step from ncu CSV files")
    ap.add_argument("--steps", type=int, default=3, help="decode steps each file's run made")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    for path in args.files:
        point = os.path.basename(path)[len("profile-"):-len(".csv")].replace("-", ", adapters ", 1)
        try:
            launches = rows(path)
        except OSError as err:
            print(f"== batch {point}: {err}")
            continue
        if not launches:
            print(f"== batch {point}: no kernel times in {os.path.basename(path)}")
            continue
        groups = {}
        for name, grid, block, ns in launches:
            g = groups.setdefault((name, grid, block), [0, 0.0])
            g[0] += 1
            g[1] += ns
        total = sum(g[1] for g in groups.values()) / args.steps / 1e3
        print(f"== batch {point}: {len(launches) / args.steps:.0f} kernels, {total:.1f} us of kernel time per step")
        print(f"  {'us/step':>8} {'share':>6} {'calls':>6} {'us/call':>8}  kernel [grid] (block)")
        for (name, grid, block), (n, ns) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
            per = ns / args.steps / 1e3
            print(f"  {per:8.1f} {100 * per / total:5.1f}% {n / args.steps:6.0f} {ns / n / 1e3:8.2f}  {name} [{grid}] ({block})")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
