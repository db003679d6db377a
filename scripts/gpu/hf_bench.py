#!/usr/bin/env python3
"""Hugging Face transformers + peft reference for Nozzle's CUDA benchmark.

Reads nozzle.json, written by runtime/engine's TestCUDABench (the generated
Llama-shaped model folder, its rank-16 PEFT adapters, the prompt length and
the number of decode steps), runs the same model and adapters with
transformers + peft on the same GPU, and writes hf.json with:

  - decode tokens/s after a prompt of the same length, per batch size, with
    no adapter, one adapter (peft's active adapter) and distinct adapters
    per sequence (peft's mixed-batch inference, `adapter_names` per sample);
  - host-to-device and device-to-device copy bandwidth measured with PyTorch
    in the same run (the baseline for Nozzle's adapter upload).

Decode is timed step by step (greedy, KV cache on, bf16, the model's default
attention) after two warm-up steps, with the GPU synchronised around each
step. Measurements run in order of importance and stop at --deadline.

  python3 scripts/gpu/hf_bench.py --nozzle OUT/nozzle.json --out OUT/hf.json
"""
import argparse
import json
import statistics
import time
import traceback


def log(*parts):
    print("hf_bench:", *parts, flush=True)


def copy_bandwidth(torch):
    """Host-to-device (pinned) and device-to-device copy bandwidth, bytes/s."""
    n = 256 << 20
    host = torch.empty(n, dtype=torch.uint8).pin_memory()
    host.fill_(1)
    dev = torch.empty(n, dtype=torch.uint8, device="cuda")
    dev2 = torch.empty_like(dev)
    dev.copy_(host)
    torch.cuda.synchronize()

    def best_seconds(fn, reps=5):
        best = float("inf")
        for _ in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return best

    h2d = n / best_seconds(lambda: dev.copy_(host, non_blocking=True))
    d2d = 2 * n / best_seconds(lambda: dev2.copy_(dev))  # bytes read + written
    del host, dev, dev2
    torch.cuda.empty_cache()
    return h2d, d2d


def load_model(torch, path):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    except TypeError:  # transformers before dtype= replaced torch_dtype=
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16)
    return model.to("cuda").eval()


def decode(torch, model, batch, prompt, steps, vocab, names):
    """Greedy decode after a prompt; returns (tokens/s, median step ms)."""
    gen = torch.Generator().manual_seed(1000 + batch)
    ids = torch.randint(3, vocab - 1, (batch, prompt), generator=gen).to("cuda")
    kw = {} if names is None else {"adapter_names": names}
    with torch.inference_mode():
        try:
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **kw)
        except TypeError:
            out = model(input_ids=ids, use_cache=True, **kw)
        cache = out.past_key_values
        tok = out.logits[:, -1:].argmax(-1)
        del out
        times = []
        for _ in range(steps + 2):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(input_ids=tok, past_key_values=cache, use_cache=True, **kw)
            cache = out.past_key_values
            tok = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        del cache, out
    torch.cuda.empty_cache()
    timed = times[2:]
    return batch * len(timed) / sum(timed), 1e3 * statistics.median(timed)


def main():
    ap = argparse.ArgumentParser(description="Hugging Face transformers + peft reference for Nozzle's CUDA benchmark")
    ap.add_argument("--nozzle", required=True, help="nozzle.json written by TestCUDABench")
    ap.add_argument("--out", required=True, help="where to write hf.json")
    ap.add_argument("--batches", default="32,128", help="decode batch sizes, most important first")
    ap.add_argument("--steps", type=int, default=0, help="timed decode steps (default: nozzle.json's, at most 16)")
    ap.add_argument("--deadline", type=float, default=180, help="seconds after which no measurement starts")
    args = ap.parse_args()
    start = time.time()
    deadline = start + args.deadline
    with open(args.nozzle) as f:
        nz = json.load(f)
    res = {"errors": [], "decode": [], "prompt_tokens": nz.get("prompt_tokens", 128)}

    def save():
        res["total_seconds"] = time.time() - start
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")

    def failed(what):
        msg = f"{what}: {traceback.format_exc(limit=3)}"
        log(msg)
        res["errors"].append(msg)
        save()

    try:
        import peft
        import torch
        import transformers
    except Exception:
        failed("import")
        return 1
    res.update(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
               device=torch.cuda.get_device_name(0))
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__} on {res['device']}")
    try:
        res["h2d_bytes_per_s"], res["d2d_copy_bytes_per_s"] = copy_bandwidth(torch)
        log(f"host-to-device {res['h2d_bytes_per_s'] / 1e9:.1f} GB/s, device copy {res['d2d_copy_bytes_per_s'] / 1e9:.0f} GB/s")
    except Exception:
        failed("bandwidth")
    save()

    prompt = res["prompt_tokens"]
    steps = args.steps or min(16, nz.get("decode_steps", 16))
    res["decode_steps"] = steps
    batches = [int(b) for b in args.batches.split(",") if b]
    try:
        t = time.time()
        model = load_model(torch, nz["model_dir"])
        res["model_load_seconds"] = time.time() - t
        vocab = model.config.vocab_size
        log(f"model loaded in {res['model_load_seconds']:.1f} s")
    except Exception:
        failed("load model")
        return 1

    def measure(kind, m, batch, names):
        if time.time() > deadline - 10:
            log(f"deadline: skipped batch {batch} {kind}")
            res.setdefault("skipped", []).append(f"batch {batch} {kind}")
            return
        try:
            tps, ms = decode(torch, m, batch, prompt, steps, vocab, names)
            res["decode"].append({"batch": batch, "adapters": kind, "tokens_per_s": tps, "step_ms_median": ms})
            log(f"batch {batch:4d} adapters {kind:9s} {tps:10.1f} tokens/s (median step {ms:.2f} ms)")
        except Exception:
            failed(f"decode batch {batch} {kind}")
        save()

    # The base model first: peft wraps the model in place.
    for b in batches:
        measure("none", model, b, None)
    try:
        from peft import PeftModel

        t = time.time()
        dirs = nz["adapter_dirs"]
        pm = PeftModel.from_pretrained(model, dirs[0], adapter_name="a00")
        names = ["a00"]
        for i, d in enumerate(dirs[1:], 1):
            if time.time() > deadline - 60:
                log(f"deadline: loaded {len(names)} of {len(dirs)} adapters")
                break
            pm.load_adapter(d, adapter_name=f"a{i:02d}")
            names.append(f"a{i:02d}")
        pm.eval()
        pm.set_adapter("a00")
        res["adapters_loaded"] = len(names)
        res["adapter_load_seconds"] = time.time() - t
        log(f"{len(names)} adapters loaded in {res['adapter_load_seconds']:.1f} s")
    except Exception:
        failed("load adapters")
        return 1
    for b in batches:
        measure("distinct", pm, b, [names[i % len(names)] for i in range(b)])
    for b in batches:
        measure("one", pm, b, None)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
