#!/usr/bin/env python3
"""Summarizes a scripts/gpu-check.sh run: writes OUT/summary.txt (printed
too) and OUT/results.json from the phase statuses, the test output, the
Nozzle benchmark (nozzle.json, bench.txt) and the Hugging Face reference
(hf.json), with each figure set against its target.

  python3 scripts/gpu/summarize.py --out OUT --work WORK
"""
import argparse
import json
import os
import re


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def bench_lines(text):
    """The JSON lines engine.Bench prints after its table."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"bench"' in line:
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def decode_map(rows):
    return {(r["batch"], r["adapters"]): r["tokens_per_s"] for r in rows or []}


def main():
    ap = argparse.ArgumentParser(description="summarize a gpu-check run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    out, work = args.out, args.work

    status = []
    for line in read(os.path.join(work, "status.tsv")).splitlines():
        if "\t" in line:
            phase, text = line.split("\t", 1)
            status.append({"phase": phase, "status": text})
    tests = read(os.path.join(work, "tests.txt"))
    passed = re.findall(r"^\s*--- PASS: (\S+)", tests, re.M)
    failed = re.findall(r"^\s*--- FAIL: (\S+)", tests, re.M)
    skipped = re.findall(r"^\s*--- SKIP: (\S+)", tests, re.M)
    nz = load_json(os.path.join(out, "nozzle.json"))
    hf = load_json(os.path.join(out, "hf.json"))
    eb = bench_lines(read(os.path.join(out, "bench.txt")))
    memcheck = re.findall(r"ERROR SUMMARY: \d+ errors?", read(os.path.join(work, "memcheck.txt")))

    res = {"status": status, "tests": {"passed": passed, "failed": failed, "skipped": skipped},
           "memcheck": memcheck[-1] if memcheck else None, "nozzle": nz, "hf": hf, "engine_bench": eb, "targets": {}}
    lines = ["Nozzle CUDA backend: GPU check", ""]
    for s in status:
        lines.append(f"  {s['phase']:13s} {s['status']}")
    if passed or failed:
        lines.append(f"  tests: {len(passed)} passed, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
    lines.append("")

    targets = res["targets"]
    if nz:
        d = decode_map(nz.get("decode"))
        batches = sorted({b for b, _ in d})
        lines.append(f"Nozzle decode tokens/s ({nz.get('backend')}; {nz.get('params', 0) / 1e9:.2f}B-parameter model, "
                     f"prompt {nz.get('prompt_tokens')}, {nz.get('decode_steps')} steps):")
        lines.append(f"  {'batch':>5s} {'no adapter':>12s} {'one adapter':>12s} {'distinct':>12s} {'distinct cost':>14s}")
        for b in batches:
            none, one, dis = d.get((b, "none"), 0), d.get((b, "one"), 0), d.get((b, "distinct"), 0)
            cost = 1 - dis / none if none else float("nan")
            lines.append(f"  {b:5d} {none:12.1f} {one:12.1f} {dis:12.1f} {100 * cost:13.1f}%")
        if (32, "none") in d and (32, "distinct") in d:
            cost = 1 - d[(32, "distinct")] / d[(32, "none")]
            targets["distinct_cost_batch32"] = {"value": cost, "target": "<= 0.10", "met": cost <= 0.10}
            lines.append(f"  32 distinct adapters at batch 32 cost {100 * cost:.1f}% of base throughput (target <= 10%)")
        eff = nz.get("batch1_bandwidth_efficiency")
        if eff:
            targets["batch1_bandwidth_efficiency"] = {"value": eff, "target": ">= 0.70", "met": eff >= 0.70}
            lines.append(f"  batch-1 bandwidth efficiency {100 * eff:.0f}% of the {nz.get('read_bandwidth_bytes_per_s', 0) / 1e9:.0f} GB/s "
                         "device read bandwidth measured in the same run (target >= 70%)")
        ab, ready, call = nz.get("adapter_bytes", 0), nz.get("adapter_load_until_usable_s", 0), nz.get("adapter_load_call_s", 0)
        if ab and ready:
            line = (f"  adapter upload: {ab / 1e6:.1f} MB usable {1e3 * ready:.2f} ms after nz_adapter_load began "
                    f"(the call itself {1e3 * call:.2f} ms) = {ab / ready / 1e9:.1f} GB/s")
            h2d = (hf or {}).get("h2d_bytes_per_s")
            if h2d:
                line += f", {ab / ready / h2d:.2f}x of the {h2d / 1e9:.1f} GB/s host-to-device copy (PyTorch, same run)"
                targets["adapter_upload_vs_h2d"] = {"value": ab / ready / h2d, "target": "informational"}
            lines.append(line)
        lines.append("")
    base = load_json(os.path.join(out, "base.json"))
    res["base"] = base
    if nz and base:
        d, bd = decode_map(nz.get("decode")), decode_map(base.get("decode"))
        lines.append(f"This tree against the base revision (its CUDA library, same GPU, same run), decode tokens/s:")
        lines.append(f"  {'batch':>5s} {'adapters':9s} {'base':>10s} {'this tree':>10s} {'ratio':>7s}")
        for key in sorted(set(d) & set(bd)):
            if bd[key]:
                lines.append(f"  {key[0]:5d} {key[1]:9s} {bd[key]:10.1f} {d[key]:10.1f} {d[key] / bd[key]:6.2f}x")
        be = base.get("batch1_bandwidth_efficiency")
        if be and nz.get("batch1_bandwidth_efficiency"):
            lines.append(f"  batch-1 bandwidth efficiency: base {100 * be:.0f}%, this tree "
                         f"{100 * nz['batch1_bandwidth_efficiency']:.0f}%")
        for b in sorted({k[0] for k in bd}):
            if (b, "none") in bd and (b, "distinct") in bd and (b, "none") in d and (b, "distinct") in d:
                lines.append(f"  distinct-adapter cost at batch {b}: base {100 * (1 - bd[(b, 'distinct')] / bd[(b, 'none')]):.1f}%, "
                             f"this tree {100 * (1 - d[(b, 'distinct')] / d[(b, 'none')]):.1f}%")
        lines.append("")
    if hf:
        h = decode_map(hf.get("decode"))
        lines.append(f"Hugging Face transformers {hf.get('transformers')} + peft {hf.get('peft')} (torch {hf.get('torch')}), "
                     f"same model and {hf.get('adapters_loaded', '?')} adapters, prompt {hf.get('prompt_tokens')}:")
        for (b, kind), v in sorted(h.items()):
            line = f"  batch {b:4d} {kind:9s} {v:10.1f} tokens/s"
            if nz and (b, kind) in decode_map(nz.get("decode")):
                ratio = decode_map(nz.get("decode"))[(b, kind)] / v
                line += f"   Nozzle {ratio:6.1f}x"
                if kind == "distinct":
                    targets[f"vs_hf_peft_distinct_batch{b}"] = {"value": ratio, "target": ">= 10", "met": ratio >= 10}
            lines.append(line)
        for e in hf.get("errors", []):
            lines.append(f"  error: {e.splitlines()[0] if e else e}")
        lines.append("")
    if eb:
        lines.append("engine.Bench (what `nozzle bench engine` reports), key figures:")
        for r in eb:
            if r.get("metric") in ("distinct_adapter_cost", "batch1_bandwidth_efficiency", "adapter_load_seconds",
                                   "multi_adapter_speedup_vs_merge"):
                extra = f" ratio {r['ratio']:.2f}" if r.get("ratio") else ""
                lines.append(f"  {r['metric']} (batch {r.get('batch', '-')}): {r['value']:.4g} {r['unit']}{extra} (target {r.get('target', '-')})")
        lines.append("")
    if targets:
        lines.append("targets: " + ", ".join(f"{k} {'met' if v.get('met') else 'not met' if 'met' in v else ''}".strip()
                                            for k, v in targets.items()))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
