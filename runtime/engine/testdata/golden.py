#!/usr/bin/python3
"""Golden logits for the engine tests, computed with PyTorch.

An independent implementation of the Hugging Face Llama / Mistral / Qwen2 /
Qwen3 / Phi3 / Gemma2 / Gemma3 forward pass (LlamaRMSNorm, rotate-half RoPE
with default / linear / llama3 / longrope scaling and Phi3's partial rotary
factor, GQA via repeat_kv, causal +
sliding-window mask, SiLU-gated MLP, tied embeddings, q/k/v(/o) and MLP
biases, Qwen3's RMSNorm of each q and k head before RoPE, Phi3's fused
qkv_proj and gate_up_proj, with LoRA on the fused modules; Gemma's
RMSNorm of (1 + w), embeddings times sqrt(hidden) in the weights' dtype,
GELU(tanh)-gated MLP, post-attention and post-MLP norms, query_pre_attn_scalar,
attention and final soft-capping, alternating sliding layers and Gemma 3's
local RoPE base) and of PEFT's LoRA math
(per-module scaling alpha/r or alpha/sqrt(r), rank_pattern / alpha_pattern
resolved with get_pattern_key's regex), written from those projects'
conventions and reading the fixture files directly (its own safetensors
reader). Computation is float64 on the stored weights (bf16/f16 widened
exactly).

Run from the repository root with Debian's torch:
    /usr/bin/python3 runtime/engine/testdata/golden.py
It reads runtime/engine/testdata/models/* and writes
runtime/engine/testdata/golden.json.
"""

import json
import math
import os
import random
import re
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")
DT = torch.float64


# ---- safetensors ----------------------------------------------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[base + b:base + e]
        shape = info["shape"]
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32).astype(np.float64)
        else:
            raise ValueError(f"{path}: {name}: dtype {dt}")
        out[name] = torch.tensor(arr.reshape(shape), dtype=DT)
    return out


def load_weights(folder):
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        idx = json.load(f)
    weights = {}
    for shard in sorted(set(idx["weight_map"].values())):
        weights.update(read_safetensors(os.path.join(folder, shard)))
    return weights


# ---- config ---------------------------------------------------------------

class Config:
    def __init__(self, folder):
        with open(os.path.join(folder, "config.json")) as f:
            c = json.load(f)
        self.arch = c["architectures"][0]
        self.H = c["hidden_size"]
        self.I = c["intermediate_size"]
        self.L = c["num_hidden_layers"]
        self.nh = c["num_attention_heads"]
        self.nkv = c.get("num_key_value_heads") or self.nh
        self.hd = c.get("head_dim") or self.H // self.nh
        self.V = c["vocab_size"]
        self.eps = c.get("rms_norm_eps", 1e-6)
        rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
        self.theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
        self.rope = dict(rope)
        self.rope_type = rope.get("rope_type", rope.get("type", "default"))
        # Phi3Attention rotates the first int(head_dim · partial_rotary_factor)
        # dims of each head (Phi-4-mini), the others pass unchanged.
        self.rd = self.hd
        if c["architectures"][0] == "Phi3ForCausalLM":
            self.rd = int(self.hd * c.get("partial_rotary_factor", 1.0))
        # _compute_longrope_parameters: the original context (Phi3Config's
        # top-level field, default 4096), the attention factor from the ratio
        # of max_position_embeddings to it.
        self.rope_scale = 1.0
        if self.rope_type in ("longrope", "su"):
            self.rope_type = "longrope"
            self.orig = rope.get("original_max_position_embeddings") or c.get("original_max_position_embeddings", 4096)
            factor = c["max_position_embeddings"] / self.orig
            self.rope_scale = rope.get("attention_factor") or (
                math.sqrt(1 + math.log(factor) / math.log(self.orig)) if factor > 1 else 1.0)
        self.tie = c.get("tie_word_embeddings", False)
        attn_bias = self.arch in ("LlamaForCausalLM", "Qwen3ForCausalLM") and c.get("attention_bias", False)
        self.qkv_bias = self.arch == "Qwen2ForCausalLM" or attn_bias
        self.o_bias = attn_bias
        # Qwen3Attention: q_norm / k_norm (Qwen3RMSNorm over head_dim) on
        # the projections' heads, before RoPE.
        self.qk_norm = self.arch == "Qwen3ForCausalLM"
        # Phi3: one qkv_proj (q | k | v rows) and one gate_up_proj (gate |
        # up rows), LoRA adapters on those.
        self.fused = self.arch == "Phi3ForCausalLM"
        self.mlp_bias = self.arch == "LlamaForCausalLM" and c.get("mlp_bias", False)
        # Sliding window per layer (None = full attention).
        self.window = [None] * self.L
        if self.arch == "MistralForCausalLM":
            w = c.get("sliding_window", 4096)
            self.window = [w] * self.L
        elif self.arch == "Phi3ForCausalLM" and c.get("sliding_window"):
            self.window = [c["sliding_window"]] * self.L
        elif self.arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM") and c.get("use_sliding_window", False):
            w = c.get("sliding_window", 4096)
            mwl = c.get("max_window_layers", 28)
            self.window = [w if i >= mwl else None for i in range(self.L)]
        # Gemma2 / Gemma3 (modeling_gemma2, modeling_gemma3)
        self.gemma = self.arch in ("Gemma2ForCausalLM", "Gemma3ForCausalLM")
        self.norm_offset = 0.0
        self.scaling = self.hd ** -0.5
        self.attn_cap = self.final_cap = None
        self.local_theta = None
        self.embed_scale = 1.0
        if self.gemma:
            g3 = self.arch == "Gemma3ForCausalLM"
            self.norm_offset = 1.0
            self.qk_norm = g3
            self.qkv_bias = self.o_bias = c.get("attention_bias", False)
            self.tie = c.get("tie_word_embeddings", True)
            self.scaling = c.get("query_pre_attn_scalar", 256) ** -0.5
            self.attn_cap = c.get("attn_logit_softcapping", None if g3 else 50.0)
            self.final_cap = c.get("final_logit_softcapping", None if g3 else 30.0)
            w = c.get("sliding_window", 4096)
            if c.get("layer_types"):
                sliding = [t == "sliding_attention" for t in c["layer_types"]]
            elif g3:
                pattern = c.get("sliding_window_pattern", 6)
                sliding = [bool((i + 1) % pattern) for i in range(self.L)]
            else:
                sliding = [bool((i + 1) % 2) for i in range(self.L)]
            self.window = [w if sl else None for sl in sliding]
            if g3:
                self.local_theta = c.get("rope_local_base_freq", 10000.0)
            # The embedding scale is a tensor of the weights' dtype.
            wdt = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(c.get("torch_dtype"), torch.float32)
            self.embed_scale = float(torch.tensor(self.H ** 0.5).to(wdt))


def inv_freq(cfg, local=False, seq_len=0):
    # modeling_rope_utils: default, linear, llama3, longrope (its factors
    # switched by the forward pass's length as longrope_frequency_update
    # does: the long ones past the original context); Gemma 3's local
    # layers: default with rope_local_base_freq
    base = cfg.local_theta if local else cfg.theta
    dim = cfg.rd
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(DT) / dim))
    t = "default" if local else cfg.rope_type
    if t == "default":
        return inv
    if t == "longrope":
        ext = cfg.rope["long_factor"] if seq_len > cfg.orig else cfg.rope["short_factor"]
        return inv / torch.tensor(ext, dtype=DT)
    if t == "linear":
        return inv / cfg.rope["factor"]
    if t == "llama3":
        factor = cfg.rope["factor"]
        low = cfg.rope["low_freq_factor"]
        high = cfg.rope["high_freq_factor"]
        orig = cfg.rope["original_max_position_embeddings"]
        low_wl = orig / low
        high_wl = orig / high
        wl = 2 * math.pi / inv
        out = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (orig / wl - low) / (high - low)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wl < high_wl) * ~(wl > low_wl)
        return torch.where(medium, smoothed, out)
    raise ValueError(t)


# ---- PEFT adapter ---------------------------------------------------------

def get_pattern_key(pattern_keys, key_to_match):
    # peft.utils.other.get_pattern_key
    for k in pattern_keys:
        if re.match(rf"(.*\.)?({k})$", key_to_match):
            return k
    return key_to_match


def load_adapter(folder):
    with open(os.path.join(folder, "adapter_config.json")) as f:
        ac = json.load(f)
    assert ac["peft_type"] == "LORA"
    tensors = read_safetensors(os.path.join(folder, "adapter_model.safetensors"))
    alpha_pattern = ac.get("alpha_pattern") or {}
    rank_pattern = ac.get("rank_pattern") or {}
    loras = {}
    for name, t in tensors.items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])\.weight", name)
        assert m, name
        loras.setdefault(m.group(1), {})[m.group(2)] = t
    out = {}
    for module, ab in loras.items():
        r_key = get_pattern_key(rank_pattern.keys(), module)
        r = rank_pattern.get(r_key, ac["r"])
        a_key = get_pattern_key(alpha_pattern.keys(), module)
        alpha = alpha_pattern.get(a_key, ac["lora_alpha"])
        assert ab["A"].shape[0] == r, (module, ab["A"].shape, r)
        scaling = alpha / math.sqrt(r) if ac.get("use_rslora") else alpha / r
        out[module] = (ab["A"], ab["B"], scaling)
    return out


# ---- forward --------------------------------------------------------------

def rms_norm(x, w, eps, offset=0.0):
    var = x.pow(2).mean(-1, keepdim=True)
    return (offset + w) * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def linear(x, W, prefix, lora, name):
    y = x @ W[prefix + name + ".weight"].T
    b = W.get(prefix + name + ".bias")
    if b is not None:
        y = y + b
    if lora is not None:
        module = prefix + name
        if module in lora:
            A, B, s = lora[module]
            y = y + (x @ A.T @ B.T) * s
    return y


def cos_sin(T, inv, scale=1.0):
    pos = torch.arange(T, dtype=DT)
    freqs = torch.outer(pos, inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * scale, emb.sin() * scale


def apply_rope(x, cos, sin):
    # apply_rotary_pos_emb over the first cos.shape[-1] dims (all of them
    # but with a partial rotary factor), the rest passed on
    rd = cos.shape[-1]
    r, rest = x[..., :rd], x[..., rd:]
    return torch.cat((r * cos + rotate_half(r) * sin, rest), dim=-1)


def softcap(x, cap):
    return x if cap is None else torch.tanh(x / cap) * cap


def forward(cfg, W, ids, lora=None, inv=None):
    T = len(ids)
    h = W["model.embed_tokens.weight"][torch.tensor(ids)] * cfg.embed_scale
    if cfg.rope_type == "longrope":
        inv = inv_freq(cfg, seq_len=T)
    cos_g, sin_g = cos_sin(T, inv, cfg.rope_scale)
    if cfg.local_theta is not None:
        cos_l, sin_l = cos_sin(T, inv_freq(cfg, local=True))
    off = cfg.norm_offset
    for layer in range(cfg.L):
        p = f"model.layers.{layer}."
        cos, sin = cos_g, sin_g
        if cfg.local_theta is not None and cfg.window[layer] is not None:
            cos, sin = cos_l, sin_l
        x = rms_norm(h, W[p + "input_layernorm.weight"], cfg.eps, off)
        if cfg.fused:
            # modeling_phi3: qkv = self.qkv_proj(x), then sliced
            qkv = linear(x, W, p, lora, "self_attn.qkv_proj")
            qd, kvd = cfg.nh * cfg.hd, cfg.nkv * cfg.hd
            q, k, v = qkv[:, :qd], qkv[:, qd:qd + kvd], qkv[:, qd + kvd:]
        else:
            q = linear(x, W, p, lora, "self_attn.q_proj")
            k = linear(x, W, p, lora, "self_attn.k_proj")
            v = linear(x, W, p, lora, "self_attn.v_proj")
        q = q.reshape(T, cfg.nh, cfg.hd)
        k = k.reshape(T, cfg.nkv, cfg.hd)
        if cfg.qk_norm:
            q = rms_norm(q, W[p + "self_attn.q_norm.weight"], cfg.eps, off)
            k = rms_norm(k, W[p + "self_attn.k_norm.weight"], cfg.eps, off)
        q = q.transpose(0, 1)
        k = k.transpose(0, 1)
        v = v.reshape(T, cfg.nkv, cfg.hd).transpose(0, 1)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        rep = cfg.nh // cfg.nkv
        k = k.repeat_interleave(rep, dim=0)
        v = v.repeat_interleave(rep, dim=0)
        scores = softcap((q @ k.transpose(1, 2)) * cfg.scaling, cfg.attn_cap)
        i = torch.arange(T).view(T, 1)
        j = torch.arange(T).view(1, T)
        allowed = j <= i
        if cfg.window[layer] is not None:
            allowed = allowed & (j > i - cfg.window[layer])
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        a = (probs @ v).transpose(0, 1).reshape(T, cfg.nh * cfg.hd)
        a = linear(a, W, p, lora, "self_attn.o_proj")
        if cfg.gemma:
            h = h + rms_norm(a, W[p + "post_attention_layernorm.weight"], cfg.eps, off)
            x = rms_norm(h, W[p + "pre_feedforward_layernorm.weight"], cfg.eps, off)
        else:
            h = h + a
            x = rms_norm(h, W[p + "post_attention_layernorm.weight"], cfg.eps)
        if cfg.fused:
            # modeling_phi3: gate, up = gate_up_proj(x).chunk(2, dim=-1)
            g, u = linear(x, W, p, lora, "mlp.gate_up_proj").chunk(2, dim=-1)
        else:
            g = linear(x, W, p, lora, "mlp.gate_proj")
            u = linear(x, W, p, lora, "mlp.up_proj")
        if cfg.gemma:
            # gelu_pytorch_tanh
            m = linear(torch.nn.functional.gelu(g, approximate="tanh") * u, W, p, lora, "mlp.down_proj")
            h = h + rms_norm(m, W[p + "post_feedforward_layernorm.weight"], cfg.eps, off)
        else:
            h = h + linear(torch.nn.functional.silu(g) * u, W, p, lora, "mlp.down_proj")
    h = rms_norm(h, W["model.norm.weight"], cfg.eps, off)
    head = W["model.embed_tokens.weight"] if cfg.tie or "lm_head.weight" not in W else W["lm_head.weight"]
    return softcap(h @ head.T, cfg.final_cap)


def greedy(cfg, W, ids, lora, inv, n):
    ids = list(ids)
    out = []
    margin = float("inf")
    for _ in range(n):
        logits = forward(cfg, W, ids, lora, inv)[-1]
        top = torch.topk(logits, 2).values
        margin = min(margin, float(top[0] - top[1]))
        tok = int(torch.argmax(logits))
        out.append(tok)
        ids.append(tok)
    return out, margin


def main():
    cases = []
    for name in sorted(os.listdir(MODELS)):
        # one generator per model, so that a model added leaves the others'
        # prompts as they were
        rng = random.Random("golden/" + name)
        folder = os.path.join(MODELS, name)
        cfg = Config(folder)
        W = load_weights(folder)
        inv = inv_freq(cfg)
        adapters = [""] + sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        for adapter in adapters:
            lora = load_adapter(os.path.join(folder, adapter)) if adapter else None
            for _ in range(2):
                # Prompts whose greedy continuation has clear winners, so a
                # float32 engine must reproduce it.
                for attempt in range(50):
                    n = rng.randint(7, 13)
                    prompt = [rng.randrange(cfg.V) for _ in range(n)]
                    cont, margin = greedy(cfg, W, prompt, lora, inv, 8)
                    if margin > 2e-2:
                        break
                logits = forward(cfg, W, prompt, lora, inv)
                positions = [n - 3, n - 2, n - 1]
                cases.append({
                    "model": name,
                    "adapter": adapter,
                    "prompt": prompt,
                    "positions": positions,
                    "logits": [[round(float(v), 9) for v in logits[p]] for p in positions],
                    "greedy": cont,
                    "greedy_min_margin": round(margin, 6),
                })
    out = {"generator": "runtime/engine/testdata/golden.py (torch %s, float64)" % torch.__version__, "cases": cases}
    with open(os.path.join(HERE, "golden.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote %d cases" % len(cases))


if __name__ == "__main__":
    main()
