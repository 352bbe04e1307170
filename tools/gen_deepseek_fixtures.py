#!/usr/bin/env python3
"""Golden data for the DeepSeek-V2 / V2-Lite / V3 (R1) models: tests/data/deepseek/.

For each tiny random-weight config this script writes
  config.json              HF checkpoint format (architectures, rope_scaling, ...)
  model.safetensors        HF checkpoint tensor names (per-expert weights, MTP layer at
                           index num_hidden_layers), f32, or DeepSeek FP8 for v3_fp8
  reference.safetensors    input_ids, logits at every position, named activations

Two independent computations produce the reference and must agree (asserted):
  * transformers' DeepseekV2ForCausalLM / DeepseekV3ForCausalLM, patched where it departs
    from DeepSeek's official inference/model.py (see PATCHES below and README.md);
  * `OfficialRef` below, a re-implementation of the official formulas (model.py: MLA,
    Gate, MoE, Block, precompute_freqs_cis) plus the V3 MTP module, which model.py lacks.
Optionally (--official-model-py path/to/DeepSeek-V3/inference/model.py) the official
model.py itself is imported and run on the same weights, and must agree too.

Logits saved are transformers' (patched); activations are OfficialRef's, because they
keep the official tensor layouts (k_pe in interleaved pair order, latent cache c_kv).

Usage:  python3 tools/gen_deepseek_fixtures.py [--out tests/data/deepseek]
                [--official-model-py /path/to/inference/model.py] [--only v3]
Needs torch and transformers >= 5 (DeepseekV2/V3 built in). CPU only, seconds.
"""

import argparse
import inspect
import json
import math
import os
import sys
import types

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_grad_enabled(False)

PREFILL = 48  # P prefill tokens
DECODE = 16  # then 16 decode steps; input_ids has P + 16 tokens
N_TOKENS = PREFILL + DECODE

# YaRN everywhere: max_position_embeddings > original_max_position_embeddings, so the
# official code (which switches YaRN on only when max_seq_len > original_seq_len) and
# transformers (which always applies a configured rope_scaling) compute the same thing.
ROPE_THETA = 10000.0
YARN_FACTOR = 4.0
YARN_ORIGINAL = 4096
MAX_POS = 16384
BETA_FAST = 32
BETA_SLOW = 1

# ---------------------------------------------------------------------------------------
# Fixture configs (HF config.json fields)
# ---------------------------------------------------------------------------------------


def base_config(arch, model_type, **kw):
    cfg = {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 2,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": None,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": MAX_POS,
        "rope_theta": ROPE_THETA,
        "rope_scaling": {
            "type": "yarn",
            "factor": YARN_FACTOR,
            "original_max_position_embeddings": YARN_ORIGINAL,
            "beta_fast": BETA_FAST,
            "beta_slow": BETA_SLOW,
            # mscale == mscale_all_dim as in every released DeepSeek config: transformers
            # then scales cos/sin by mscale/mscale_all_dim = 1, as the official code does.
            "mscale": 0.707,
            "mscale_all_dim": 0.707,
        },
        "attention_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "aux_loss_alpha": 0.001,
        "seq_aux": True,
        "ep_size": 1,
        "use_cache": True,
    }
    cfg.update(kw)
    return cfg


def fixture_configs():
    v2_lite = base_config(
        "DeepseekV2ForCausalLM", "deepseek_v2",
        n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2,
        topk_method="greedy", n_group=1, topk_group=1, scoring_func="softmax",
        norm_topk_prob=False, routed_scaling_factor=1.0)
    v2 = base_config(
        "DeepseekV2ForCausalLM", "deepseek_v2",
        q_lora_rank=48,
        n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4,
        topk_method="group_limited_greedy", n_group=4, topk_group=2, scoring_func="softmax",
        norm_topk_prob=False, routed_scaling_factor=2.0)
    v3 = base_config(
        "DeepseekV3ForCausalLM", "deepseek_v3",
        q_lora_rank=48,
        n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4,
        topk_method="noaux_tc", n_group=4, topk_group=2, scoring_func="sigmoid",
        norm_topk_prob=True, routed_scaling_factor=2.5, num_nextn_predict_layers=1)
    v3["rope_scaling"] = dict(v3["rope_scaling"], mscale=1.0, mscale_all_dim=1.0)
    # FP8: dimensions > 128 and not multiples of 128, so 128x128 scale blocks have edges:
    # hidden 192 (1.5 blocks), dense intermediate 160, q_lora 144, kv_lora 160,
    # wkv_a out 176, wq_b out 192, wkv_b out 256 (exact).
    v3_fp8 = dict(v3, hidden_size=192, intermediate_size=160, q_lora_rank=144,
                  kv_lora_rank=160, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
                  torch_dtype="bfloat16",
                  quantization_config={"activation_scheme": "dynamic", "fmt": "e4m3",
                                       "quant_method": "fp8",
                                       "weight_block_size": [128, 128]})
    return {"v2_lite": v2_lite, "v2": v2, "v3": v3, "v3_fp8": v3_fp8}


def is_v3(cfg):
    return cfg["model_type"] == "deepseek_v3"


def n_mtp(cfg):
    return cfg.get("num_nextn_predict_layers", 0)


# ---------------------------------------------------------------------------------------
# Random weights, HF checkpoint names
# ---------------------------------------------------------------------------------------


def make_weights(cfg, gen):
    """Returns {hf_checkpoint_name: f32 tensor}. Scales keep activations O(1) so that a
    wrong formula moves the logits visibly (HF's init std 0.02 would flatten them)."""
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kvr, qr = cfg["kv_lora_rank"], cfg["q_lora_rank"]
    E = cfg["n_routed_experts"]
    W = {}

    def lin(name, out_f, in_f, gain=1.0):
        W[name] = torch.randn(out_f, in_f, generator=gen) * (gain / math.sqrt(in_f))

    def norm(name, n):
        W[name] = 1.0 + 0.1 * torch.randn(n, generator=gen)

    def block(p, layer_id):
        norm(p + "input_layernorm.weight", H)
        norm(p + "post_attention_layernorm.weight", H)
        a = p + "self_attn."
        if qr is None:
            lin(a + "q_proj.weight", nh * (nope + rope), H)
        else:
            lin(a + "q_a_proj.weight", qr, H)
            norm(a + "q_a_layernorm.weight", qr)
            lin(a + "q_b_proj.weight", nh * (nope + rope), qr)
        lin(a + "kv_a_proj_with_mqa.weight", kvr + rope, H)
        norm(a + "kv_a_layernorm.weight", kvr)
        lin(a + "kv_b_proj.weight", nh * (nope + vd), kvr)
        lin(a + "o_proj.weight", H, nh * vd)
        m = p + "mlp."
        if layer_id < cfg["first_k_dense_replace"]:
            I = cfg["intermediate_size"]
            lin(m + "gate_proj.weight", I, H)
            lin(m + "up_proj.weight", I, H)
            lin(m + "down_proj.weight", H, I)
        else:
            I = cfg["moe_intermediate_size"]
            lin(m + "gate.weight", E, H, gain=2.0)
            if is_v3(cfg):
                # Explicit correction bias with negative entries: biased scores s + b go
                # below zero, which is where masking dropped groups with 0.0 instead of
                # -inf would pick a dropped-group expert. One expert per group gets a
                # bias in [0, 0.2), the rest one in [-1, -0.3): the kept groups then hold
                # fewer than k positive biased scores for many tokens (asserted below).
                G = cfg["n_group"]
                b = torch.rand(E, generator=gen) * 0.7 - 1.0
                pos = torch.arange(G) * (E // G) + torch.randint(0, E // G, (G,), generator=gen)
                b[pos] = torch.rand(G, generator=gen) * 0.2
                W[m + "gate.e_score_correction_bias"] = b
            for e in range(E):
                lin(m + f"experts.{e}.gate_proj.weight", I, H)
                lin(m + f"experts.{e}.up_proj.weight", I, H)
                lin(m + f"experts.{e}.down_proj.weight", H, I)
            Is = I * cfg["n_shared_experts"]
            lin(m + "shared_experts.gate_proj.weight", Is, H)
            lin(m + "shared_experts.up_proj.weight", Is, H)
            lin(m + "shared_experts.down_proj.weight", H, Is)

    W["model.embed_tokens.weight"] = torch.randn(V, H, generator=gen)
    for i in range(cfg["num_hidden_layers"]):
        block(f"model.layers.{i}.", i)
    norm("model.norm.weight", H)
    lin("lm_head.weight", V, H)
    for k in range(n_mtp(cfg)):
        # Released V3 layout (README_WEIGHTS.md): MTP module k is layer num_hidden_layers+k,
        # with its own copies of embed_tokens and shared_head.head (equal to the main ones).
        L = cfg["num_hidden_layers"] + k
        p = f"model.layers.{L}."
        block(p, L)
        W[p + "embed_tokens.weight"] = W["model.embed_tokens.weight"].clone()
        norm(p + "enorm.weight", H)
        norm(p + "hnorm.weight", H)
        lin(p + "eh_proj.weight", H, 2 * H)
        norm(p + "shared_head.norm.weight", H)
        W[p + "shared_head.head.weight"] = W["lm_head.weight"].clone()
    return W


# ---------------------------------------------------------------------------------------
# DeepSeek FP8 (README_WEIGHTS.md "FP8 Weight Documentation")
# ---------------------------------------------------------------------------------------

FP8_BLOCK = 128
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def fp8_quantizable(name, cfg):
    """Linear weights of attention and FFN, as in the released V3 checkpoint. Not
    quantised: embeddings, lm_head, norms, router gate, correction bias, and the MTP
    eh_proj / shared_head (bf16 in the release; vLLM builds eh_proj as a plain Linear)."""
    if not name.endswith(".weight") or name.endswith("norm.weight"):
        return False
    if "embed_tokens" in name or name == "lm_head.weight" or "shared_head" in name:
        return False
    if name.endswith("mlp.gate.weight") or name.endswith("eh_proj.weight"):
        return False
    return name.count(".") >= 4 and ("self_attn." in name or "mlp." in name)


def fp8_quantize(w):
    """w [out, in] f32 -> (float8_e4m3fn [out, in], weight_scale_inv f32 [ceil(out/128),
    ceil(in/128)]) with w ~= fp8 * scale per 128x128 block; edge blocks are smaller (the
    scale of a padded block equals that of its unpadded part: zero padding leaves amax)."""
    out_f, in_f = w.shape
    so, si = -(-out_f // FP8_BLOCK), -(-in_f // FP8_BLOCK)
    scale = torch.empty(so, si)
    q = torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn)
    for i in range(so):
        for j in range(si):
            blk = w[i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK]
            s = blk.abs().max().clamp(min=1e-12) / FP8_MAX
            scale[i, j] = s
            q[i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK] = (
                (blk / s).to(torch.float8_e4m3fn))
    return q, scale


def fp8_dequantize(q, scale):
    """The official dequantisation (kernel.py weight_dequant): fp8 block * scale."""
    out_f, in_f = q.shape
    s = scale.repeat_interleave(FP8_BLOCK, 0)[:out_f].repeat_interleave(FP8_BLOCK, 1)[:, :in_f]
    return q.to(torch.float32) * s


# ---------------------------------------------------------------------------------------
# OfficialRef: the official formulas (DeepSeek-V3 inference/model.py), plain torch, f32
# ---------------------------------------------------------------------------------------


class OfficialArgs:
    """model.py ModelArgs from an HF config (names as in convert.py / configs/*.json)."""

    def __init__(self, cfg):
        rs = cfg["rope_scaling"]
        self.vocab_size = cfg["vocab_size"]
        self.dim = cfg["hidden_size"]
        self.inter_dim = cfg["intermediate_size"]
        self.moe_inter_dim = cfg["moe_intermediate_size"]
        self.n_layers = cfg["num_hidden_layers"]
        self.n_dense_layers = cfg["first_k_dense_replace"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_routed_experts = cfg["n_routed_experts"]
        self.n_shared_experts = cfg["n_shared_experts"]
        self.n_activated_experts = cfg["num_experts_per_tok"]
        # topk_method greedy == one group; group_limited_greedy / noaux_tc use n_group.
        grouped = cfg["topk_method"] != "greedy"
        self.n_expert_groups = cfg["n_group"] if grouped else 1
        self.n_limited_groups = cfg["topk_group"] if grouped else 1
        self.score_func = cfg["scoring_func"]
        self.route_scale = cfg["routed_scaling_factor"]
        self.q_lora_rank = cfg["q_lora_rank"] or 0
        self.kv_lora_rank = cfg["kv_lora_rank"]
        self.qk_nope_head_dim = cfg["qk_nope_head_dim"]
        self.qk_rope_head_dim = cfg["qk_rope_head_dim"]
        self.v_head_dim = cfg["v_head_dim"]
        self.original_seq_len = rs["original_max_position_embeddings"]
        self.rope_theta = cfg["rope_theta"]
        self.rope_factor = rs["factor"]
        self.beta_fast = rs["beta_fast"]
        self.beta_slow = rs["beta_slow"]
        self.mscale = rs["mscale_all_dim"]  # model.py's `mscale` is HF's mscale_all_dim
        self.max_seq_len = cfg["max_position_embeddings"]
        self.eps = cfg["rms_norm_eps"]


def official_inv_freq(a):
    """precompute_freqs_cis up to the angles: YaRN-corrected inverse frequencies [rope/2].
    freqs = theta^(-2i/d); when max_seq_len > original_seq_len:
      low, high = floor/ceil of d*ln(orig/(beta*2pi)) / (2 ln theta) for beta_fast, beta_slow
      smooth = 1 - clamp((i - low) / (high - low), 0, 1)
      freqs = freqs / factor * (1 - smooth) + freqs * smooth"""
    dim, base = a.qk_rope_head_dim, a.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if a.max_seq_len > a.original_seq_len:
        def corr_dim(rot):
            return dim * math.log(a.original_seq_len / (rot * 2 * math.pi)) / (2 * math.log(base))
        low = max(math.floor(corr_dim(a.beta_fast)), 0)
        high = min(math.ceil(corr_dim(a.beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / a.rope_factor * (1 - smooth) + freqs * smooth
    return freqs


def official_softmax_scale(a):
    """MLA.__init__: qk_head_dim^-0.5, times mscale^2 when YaRN is active."""
    scale = (a.qk_nope_head_dim + a.qk_rope_head_dim) ** -0.5
    if a.max_seq_len > a.original_seq_len:
        mscale = 0.1 * a.mscale * math.log(a.rope_factor) + 1.0
        scale = scale * mscale * mscale
    return scale


def official_gate(x, weight, bias, a):
    """Gate.forward. x [T, dim] -> (weights [T, k], indices [T, k])."""
    scores = x @ weight.T
    scores = scores.softmax(-1) if a.score_func == "softmax" else scores.sigmoid()
    original = scores
    if bias is not None:
        scores = scores + bias
    if a.n_expert_groups > 1:
        s = scores.view(x.size(0), a.n_expert_groups, -1)
        if bias is None:
            group_scores = s.amax(-1)  # V2: max per group
        else:
            group_scores = s.topk(2, dim=-1)[0].sum(-1)  # V3: sum of the top-2 biased
        idx = group_scores.topk(a.n_limited_groups, dim=-1)[1]
        mask = torch.ones(x.size(0), a.n_expert_groups, dtype=torch.bool).scatter_(1, idx, False)
        scores = s.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(1)
    indices = scores.topk(a.n_activated_experts, dim=-1)[1]
    weights = original.gather(1, indices)
    if a.score_func == "sigmoid":
        weights = weights / weights.sum(-1, keepdim=True)
    return weights * a.route_scale, indices


def gate_variant(x, weight, bias, a, groups="official", mask_value=float("-inf")):
    """Expert choice under departures from official_gate, to show that the fixture's
    inputs tell them apart: groups="none" ignores group limiting, "max" scores groups by
    their max (V2 rule) even with a bias, "top2" by the top-2 sum; mask_value=0.0 is what
    transformers' routers used to fill dropped groups with. Returns indices [T, k]."""
    scores = x @ weight.T
    scores = scores.softmax(-1) if a.score_func == "softmax" else scores.sigmoid()
    if bias is not None:
        scores = scores + bias
    if groups != "none" and a.n_expert_groups > 1:
        s = scores.view(x.size(0), a.n_expert_groups, -1)
        rule = groups if groups != "official" else ("max" if bias is None else "top2")
        gs = s.amax(-1) if rule == "max" else s.topk(2, dim=-1)[0].sum(-1)
        idx = gs.topk(a.n_limited_groups, dim=-1)[1]
        mask = torch.ones(x.size(0), a.n_expert_groups, dtype=torch.bool).scatter_(1, idx, False)
        scores = s.masked_fill(mask.unsqueeze(-1), mask_value).flatten(1)
    return scores.topk(a.n_activated_experts, dim=-1)[1]


def count_differ(i, j):
    return int((i.sort(-1)[0] != j.sort(-1)[0]).any(-1).sum())


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def apply_rotary_emb(x, freqs_cis):
    """x [T, h, d] with pairs (2i, 2i+1) rotated as complex numbers by freqs_cis [T, d/2]."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis[:, None, :]).flatten(-2)


class OfficialRef:
    def __init__(self, cfg, W):
        self.cfg, self.W, self.a = cfg, W, OfficialArgs(cfg)
        self.scale = official_softmax_scale(self.a)
        self.inv_freq = official_inv_freq(self.a)
        # fixture tokens whose chosen experts a departure from the official Gate changes
        self.sensitivity = {}

    def freqs_cis(self, n):
        ang = torch.outer(torch.arange(n, dtype=torch.float32), self.inv_freq)
        return torch.polar(torch.ones_like(ang), ang)

    def mla(self, p, x, fc, acts, tag):
        a, W = self.a, self.W
        T, H = x.shape[0], a.n_heads
        nope, rope, vd, kvr = a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim, a.kv_lora_rank
        if a.q_lora_rank == 0:
            q = x @ W[p + "q_proj.weight"].T
        else:
            q = rms_norm(x @ W[p + "q_a_proj.weight"].T, W[p + "q_a_layernorm.weight"], a.eps)
            q = q @ W[p + "q_b_proj.weight"].T
        q = q.view(T, H, nope + rope)
        q_nope, q_pe = q.split([nope, rope], -1)
        q_pe = apply_rotary_emb(q_pe, fc)
        kv = x @ W[p + "kv_a_proj_with_mqa.weight"].T
        c, k_pe = kv.split([kvr, rope], -1)
        k_pe = apply_rotary_emb(k_pe[:, None, :], fc)[:, 0]
        c = rms_norm(c, W[p + "kv_a_layernorm.weight"], a.eps)
        acts[tag + "kv_latent"] = c  # [T, kv_lora_rank]: the absorbed-MLA cache
        acts[tag + "k_pe"] = k_pe  # [T, qk_rope_head_dim], roped, interleaved pairs
        mask = torch.full((T, T), float("-inf")).triu_(1)
        # naive (model.py attn_impl="naive")
        wkv_b = W[p + "kv_b_proj.weight"]
        kvf = (c @ wkv_b.T).view(T, H, nope + vd)
        k_nope, v = kvf.split([nope, vd], -1)
        k = torch.cat([k_nope, k_pe[:, None, :].expand(T, H, rope)], -1)
        qq = torch.cat([q_nope, q_pe], -1)
        s = torch.einsum("shd,thd->sht", qq, k) * self.scale + mask[:, None, :]
        o = torch.einsum("sht,thd->shd", s.softmax(-1), v)
        # absorbed (model.py attn_impl="absorb"): must agree with naive
        wb = wkv_b.view(H, nope + vd, kvr)
        qa = torch.einsum("shd,hdc->shc", q_nope, wb[:, :nope])
        s2 = (torch.einsum("shc,tc->sht", qa, c) +
              torch.einsum("shr,tr->sht", q_pe, k_pe)) * self.scale + mask[:, None, :]
        o2 = torch.einsum("sht,tc->shc", s2.softmax(-1), c)
        o2 = torch.einsum("shc,hdc->shd", o2, wb[:, -vd:])
        assert torch.allclose(o, o2, atol=1e-5, rtol=1e-4), (o - o2).abs().max()
        return o.reshape(T, H * vd) @ W[p + "o_proj.weight"].T

    def mlp(self, p, x):
        W = self.W
        g = x @ W[p + "gate_proj.weight"].T
        u = x @ W[p + "up_proj.weight"].T
        return (F.silu(g) * u) @ W[p + "down_proj.weight"].T

    def moe(self, p, x, acts, tag):
        a, W = self.a, self.W
        bias = W.get(p + "gate.e_score_correction_bias")
        logits = x @ W[p + "gate.weight"].T
        acts[tag + "router_scores"] = (logits.softmax(-1) if a.score_func == "softmax"
                                       else logits.sigmoid())
        weights, idx = official_gate(x, W[p + "gate.weight"], bias, a)
        for what, kw in (("0.0 mask", dict(mask_value=0.0)), ("no groups", dict(groups="none")),
                         ("max group score", dict(groups="max"))):
            if a.n_expert_groups > 1 and (bias is not None or what != "max group score"):
                alt = gate_variant(x, W[p + "gate.weight"], bias, a, **kw)
                self.sensitivity[what] = self.sensitivity.get(what, 0) + count_differ(alt, idx)
        order = idx.argsort(-1)  # canonical order: ascending expert id
        acts[tag + "topk_idx"] = idx.gather(1, order)
        acts[tag + "topk_weight"] = weights.gather(1, order)
        y = torch.zeros_like(x)
        for t in range(x.size(0)):
            for j in range(idx.size(1)):
                y[t] += weights[t, j] * self.mlp(p + f"experts.{int(idx[t, j])}.", x[t:t + 1])[0]
        acts[tag + "routed_out"] = y
        return y + self.mlp(p + "shared_experts.", x)

    def block(self, layer_id, h, fc, acts, tag):
        a, W = self.a, self.W
        p = f"model.layers.{layer_id}."
        x = rms_norm(h, W[p + "input_layernorm.weight"], a.eps)
        attn = self.mla(p + "self_attn.", x, fc, acts, tag)
        acts[tag + "attn_out"] = attn
        h = h + attn
        x = rms_norm(h, W[p + "post_attention_layernorm.weight"], a.eps)
        if layer_id < a.n_dense_layers:
            ffn = self.mlp(p + "mlp.", x)
        else:
            ffn = self.moe(p + "mlp.", x, acts, tag)
        acts[tag + "ffn_out"] = ffn
        h = h + ffn
        acts[tag + "out"] = h
        return h

    def forward(self, ids):
        a, W = self.a, self.W
        n = ids.numel()
        fc = self.freqs_cis(n)
        acts = {}
        h = W["model.embed_tokens.weight"][ids]
        acts["embed"] = h
        for i in range(a.n_layers):
            h = self.block(i, h, fc, acts, f"layer{i}.")
        hn = rms_norm(h, W["model.norm.weight"], a.eps)
        acts["final_norm"] = hn
        logits = hn @ W["lm_head.weight"].T
        return logits, acts

    def mtp(self, ids, h_main, acts):
        """MTP module 1 (DeepSeek-V3 paper 2.2; layout of the released weights):
          x_i = eh_proj(cat(enorm(emb(t_{i+1})), hnorm(h_i)))   i = 0 .. n-2
          x   = Block_L(x) at positions 0 .. n-2 (own KV cache)
          mtp_logits_i = shared_head.head(shared_head.norm(x_i))  predicts t_{i+2}
        Concat order [embedding, hidden] as vLLM/SGLang deepseek_mtp (the paper's
        equation writes the hidden first; the released eh_proj follows the engines).
        h_i is the main model's hidden AFTER the final norm: vLLM and SGLang feed the
        target model's output hidden states (post model.norm) to the MTP layer."""
        a, W = self.a, self.W
        L = a.n_layers
        p = f"model.layers.{L}."
        n = ids.numel() - 1
        e = W[p + "embed_tokens.weight"][ids[1:]]
        x = torch.cat([rms_norm(e, W[p + "enorm.weight"], a.eps),
                       rms_norm(h_main[:n], W[p + "hnorm.weight"], a.eps)], -1)
        x = x @ W[p + "eh_proj.weight"].T
        acts["mtp.eh_out"] = x
        x = self.block(L, x, self.freqs_cis(n), acts, "mtp.")
        x = rms_norm(x, W[p + "shared_head.norm.weight"], a.eps)
        return x @ W[p + "shared_head.head.weight"].T


# ---------------------------------------------------------------------------------------
# transformers, patched
# ---------------------------------------------------------------------------------------

PATCHES = []  # human-readable log, printed and checked


def hf_classes(cfg):
    if is_v3(cfg):
        from transformers.models.deepseek_v3 import modeling_deepseek_v3 as m
        return m, m.DeepseekV3ForCausalLM
    from transformers.models.deepseek_v2 import modeling_deepseek_v2 as m
    return m, m.DeepseekV2ForCausalLM


def patch_v2_router(m):
    """PATCH (V2 group_limited_greedy): transformers masks dropped groups with 0.0; the
    official Gate uses -inf. Softmax scores are > 0, so this only matters once k exceeds
    the experts left in the kept groups, but we patch to the official rule anyway."""
    if getattr(m.DeepseekV2TopkRouter, "_sputnik_patched", False):
        return
    src = inspect.getsource(m.DeepseekV2TopkRouter.forward)
    assert "masked_fill(~score_mask.bool(), 0.0)" in src, "transformers V2 router changed"

    def forward(self, hidden_states):
        x = hidden_states.view(-1, self.hidden_dim).float()
        router_logits = F.linear(x, self.weight.float())
        args = types.SimpleNamespace(
            score_func="softmax", route_scale=self.routed_scaling_factor,
            n_expert_groups=self.num_group if self.topk_method == "group_limited_greedy" else 1,
            n_limited_groups=self.topk_group, n_activated_experts=self.top_k)
        w, idx = official_gate(x, self.weight.float(), None, args)
        return router_logits, w, idx

    m.DeepseekV2TopkRouter.forward = forward
    m.DeepseekV2TopkRouter._sputnik_patched = True
    PATCHES.append("V2 router: dropped groups -inf (was 0.0), via official Gate formula")


def check_v3_router(m):
    """transformers >= 5 masks dropped groups with -inf (older remote code used 0.0) and
    scores groups by the sum of the top-2 biased scores: as official. Checked here by
    source and, in check_router(), by behaviour. Its only remaining departure: +1e-20 in
    the normalising denominator (official: none); harmless at f32."""
    src = inspect.getsource(m.DeepseekV3TopkRouter.forward)
    assert 'masked_fill(~score_mask.bool(), float("-inf"))' in src, \
        "transformers V3 router no longer masks with -inf: patch it"
    assert ".topk(2, dim=-1)[0]" in src and "norm_topk_prob" in src


def build_hf(cfg, W, cfg_dir):
    from transformers import AutoConfig
    m, cls = hf_classes(cfg)
    hcfg = AutoConfig.from_pretrained(cfg_dir)
    if hasattr(hcfg, "quantization_config"):
        # The reference runs on the dequantised weights in f32, not transformers' FP8 path.
        del hcfg.quantization_config
    if is_v3(cfg):
        check_v3_router(m)
        # RoPE layout: official rotates interleaved pairs (2i, 2i+1) (view_as_complex).
        # transformers' V3 does so only with rope_interleave=True (it then emits the
        # rotated dims de-interleaved, the same permutation for q and k, so q.k and the
        # attention output are unchanged). False would rotate (i, i+d/2) pairs: wrong.
        assert hcfg.rope_interleave is True
    else:
        patch_v2_router(m)  # V2 rotates complex pairs like the official code: no patch
    model = cls._from_config(hcfg, attn_implementation="eager", dtype=torch.float32).eval()

    sd = {}
    L = cfg["num_hidden_layers"]
    E = cfg["n_routed_experts"]
    for k, v in W.items():
        if any(k.startswith(f"model.layers.{L + j}.") for j in range(n_mtp(cfg))):
            continue  # transformers has no MTP module
        if ".mlp.experts." in k:
            continue
        sd[k] = v
    for i in range(cfg["first_k_dense_replace"], L):
        p = f"model.layers.{i}.mlp.experts."
        sd[p + "gate_up_proj"] = torch.stack([
            torch.cat([W[p + f"{e}.gate_proj.weight"], W[p + f"{e}.up_proj.weight"]], 0)
            for e in range(E)])
        sd[p + "down_proj"] = torch.stack([W[p + f"{e}.down_proj.weight"] for e in range(E)])
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    assert not missing and not unexpected, (missing, unexpected)

    a = OfficialArgs(cfg)
    # Attention scale: qk_head_dim^-0.5 * mscale^2, mscale = 0.1*mscale_all_dim*ln(factor)+1.
    # transformers' yarn_apply_mscale gives exactly this (it applies it whenever rope_scaling
    # is set; official only when max_seq_len > original_seq_len, which our config ensures).
    want = official_softmax_scale(a)
    for layer in model.model.layers:
        if abs(layer.self_attn.scaling - want) > 1e-12:
            layer.self_attn.scaling = want
            PATCHES.append("attention scale set to the official value")
    rot = model.model.rotary_emb
    # YaRN inverse frequencies: same formula (truncate=True: floor/ceil like official).
    assert torch.allclose(rot.inv_freq, official_inv_freq(a), rtol=1e-6, atol=0), \
        (rot.inv_freq, official_inv_freq(a))
    # cos/sin scaling: transformers multiplies cos/sin by mscale/mscale_all_dim (or by
    # 0.1 ln(factor) + 1 when only one is given); the official code never scales them.
    if rot.attention_scaling != 1.0:
        rot.attention_scaling = 1.0
        PATCHES.append("rotary attention_scaling forced to 1.0")
    return model


def check_router(model, cfg, W, gen):
    """The HF router (patched) against official_gate on 512 random hidden states."""
    a = OfficialArgs(cfg)
    i = cfg["first_k_dense_replace"]
    gate = model.model.layers[i].mlp.gate
    p = f"model.layers.{i}.mlp.gate."
    x = torch.randn(512, cfg["hidden_size"], generator=gen) * 1.5
    _, hw, hidx = gate(x)
    ow, oidx = official_gate(x, W[p + "weight"], W.get(p + "e_score_correction_bias"), a)
    ho, oo = hidx.argsort(-1), oidx.argsort(-1)
    assert torch.equal(hidx.gather(1, ho), oidx.gather(1, oo)), "router indices differ"
    assert torch.allclose(hw.gather(1, ho), ow.gather(1, oo), atol=1e-6), "router weights"
    if is_v3(cfg):
        z = gate_variant(x, W[p + "weight"], W[p + "e_score_correction_bias"], a, mask_value=0.0)
        differ = count_differ(z, oidx)
        assert differ > 0, "random inputs never separate 0.0- from -inf-masking"
        return differ
    return 0


def hf_forward(model, cfg, ids):
    """Full forward with hooks; then prefill + 16 cached decode steps must match it."""
    acts, hooks = {}, []
    for i, layer in enumerate(model.model.layers):
        hooks.append(layer.self_attn.register_forward_hook(
            lambda mod, inp, out, i=i: acts.__setitem__(f"layer{i}.attn_out", out[0][0])))
        hooks.append(layer.mlp.register_forward_hook(
            lambda mod, inp, out, i=i: acts.__setitem__(f"layer{i}.ffn_out", out[0])))
    out = model(input_ids=ids[None], output_hidden_states=True, use_cache=False)
    for h in hooks:
        h.remove()
    logits = out.logits[0]
    # decode path with transformers' cache
    o = model(input_ids=ids[None, :PREFILL], use_cache=True)
    cache, dec = o.past_key_values, [o.logits[0]]
    for t in range(PREFILL, ids.numel()):
        o = model(input_ids=ids[None, t:t + 1], cache=cache, use_cache=True)
        cache = o.past_key_values
        dec.append(o.logits[0])
    dec = torch.cat(dec, 0)
    d = (dec - logits).abs().max().item()
    assert d < 1e-4, f"cached decode differs from full forward by {d}"
    return logits, acts, d


def hf_mtp(model, cfg, W, ids, h_main):
    """The MTP block run through transformers' own decoder layer (weights of layer L)."""
    m, _ = hf_classes(cfg)
    L = cfg["num_hidden_layers"]
    p = f"model.layers.{L}."
    layer = m.DeepseekV3DecoderLayer(model.config, L).eval()
    sd = {}
    for k, v in W.items():
        if k.startswith(p) and ".experts." not in k and k[len(p):].split(".")[0] in (
                "self_attn", "mlp", "input_layernorm", "post_attention_layernorm"):
            sd[k[len(p):]] = v
    E = cfg["n_routed_experts"]
    e = p + "mlp.experts."
    sd["mlp.experts.gate_up_proj"] = torch.stack([
        torch.cat([W[e + f"{j}.gate_proj.weight"], W[e + f"{j}.up_proj.weight"]], 0)
        for j in range(E)])
    sd["mlp.experts.down_proj"] = torch.stack([W[e + f"{j}.down_proj.weight"] for j in range(E)])
    layer.load_state_dict(sd, strict=True)
    layer.self_attn.scaling = model.model.layers[0].self_attn.scaling
    n = ids.numel() - 1
    eps = cfg["rms_norm_eps"]
    emb = model.model.embed_tokens(ids[1:])
    x = torch.cat([rms_norm(emb, W[p + "enorm.weight"], eps),
                   rms_norm(h_main[:n], W[p + "hnorm.weight"], eps)], -1)
    x = F.linear(x, W[p + "eh_proj.weight"])[None]
    pos = torch.arange(n)[None]
    pe = model.model.rotary_emb(x, pos)
    mask = torch.full((n, n), float("-inf")).triu_(1)[None, None]
    x = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=pe)
    x = x[0] if isinstance(x, tuple) else x
    x = rms_norm(x[0], W[p + "shared_head.norm.weight"], eps)
    return x @ W[p + "shared_head.head.weight"].T


# ---------------------------------------------------------------------------------------
# Optional: DeepSeek's own inference/model.py on the same weights
# ---------------------------------------------------------------------------------------


def run_official_model_py(path, cfg, W_file, ids):
    """Imports model.py (its triton kernel module replaced by torch stand-ins for the two
    functions the bf16 path calls) and returns logits at every position."""
    if "kernel" not in sys.modules or not getattr(sys.modules["kernel"], "_sputnik", False):
        k = types.ModuleType("kernel")
        k._sputnik = True

        def weight_dequant(x, s, block_size=128):
            return fp8_dequantize(x, s)

        def unsupported(*args, **kw):
            raise RuntimeError("fp8 activation path not used here")
        k.weight_dequant, k.act_quant, k.fp8_gemm = weight_dequant, unsupported, unsupported
        sys.modules["kernel"] = k
    import importlib.util
    spec = importlib.util.spec_from_file_location("official_model", path)
    om = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(om)
    om.gemm_impl = "bf16"  # dequantise FP8 weights, then an ordinary GEMM
    a = OfficialArgs(cfg)
    fp8 = "quantization_config" in cfg
    args = om.ModelArgs(
        max_batch_size=1, max_seq_len=a.max_seq_len, dtype="fp8" if fp8 else "bf16",
        vocab_size=a.vocab_size, dim=a.dim, inter_dim=a.inter_dim,
        moe_inter_dim=a.moe_inter_dim, n_layers=a.n_layers, n_dense_layers=a.n_dense_layers,
        n_heads=a.n_heads, n_routed_experts=a.n_routed_experts,
        n_shared_experts=a.n_shared_experts, n_activated_experts=a.n_activated_experts,
        n_expert_groups=a.n_expert_groups, n_limited_groups=a.n_limited_groups,
        score_func=a.score_func, route_scale=a.route_scale, q_lora_rank=a.q_lora_rank,
        kv_lora_rank=a.kv_lora_rank, qk_nope_head_dim=a.qk_nope_head_dim,
        qk_rope_head_dim=a.qk_rope_head_dim, v_head_dim=a.v_head_dim,
        original_seq_len=a.original_seq_len, rope_theta=a.rope_theta,
        rope_factor=a.rope_factor, beta_fast=a.beta_fast, beta_slow=a.beta_slow,
        mscale=a.mscale)
    model = om.Transformer(args)
    for mod in model.modules():  # bf16 Linear weights -> f32 (fp8 ones stay fp8)
        if isinstance(mod, om.Linear) and mod.weight.dtype == torch.bfloat16:
            mod.weight = torch.nn.Parameter(mod.weight.float())
    for mod in model.modules():  # Gate makes its bias only when dim == 7168: force it on
        if isinstance(mod, om.Gate) and is_v3(cfg):
            mod.bias = torch.nn.Parameter(torch.zeros(a.n_routed_experts))
    names = {"embed_tokens": "embed", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm", "q_proj": "wq", "q_a_proj": "wq_a",
             "q_a_layernorm": "q_norm", "q_b_proj": "wq_b", "kv_a_proj_with_mqa": "wkv_a",
             "kv_a_layernorm": "kv_norm", "kv_b_proj": "wkv_b", "o_proj": "wo",
             "gate": "gate", "gate_proj": "w1", "down_proj": "w2", "up_proj": "w3",
             "norm": "norm", "lm_head": "head"}
    sd = {}
    for name, t in W_file.items():
        if f"layers.{a.n_layers}." in name:
            continue
        n = name[len("model."):] if name.startswith("model.") else name
        n = n.replace("self_attn", "attn").replace("mlp", "ffn")
        n = n.replace("weight_scale_inv", "scale").replace("e_score_correction_bias", "bias")
        parts = n.split(".")
        key = parts[-2] if parts[-1] in ("weight", "scale") else parts[-1]
        if parts[-1] == "bias":
            key = None
        if key is not None:
            parts[-2] = names[key]
        sd[".".join(parts)] = t
    model.load_state_dict(sd, strict=True)
    n = ids.numel()
    with torch.inference_mode():
        h = model.embed(ids[None])
        mask = torch.full((n, n), float("-inf")).triu_(1)
        for layer in model.layers:
            h = layer(h, 0, model.freqs_cis[:n], mask)
        return model.head(model.norm(h))[0].float()


# ---------------------------------------------------------------------------------------


def tiny_tokenizer_json(vocab_size):
    """A byte-level BPE with one token per byte and no merges: vocab 256 exactly. Enough
    for converters that insist on a tokenizer; token i is byte i."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    bytes_to_unicode = pre_tokenizers.ByteLevel.alphabet()
    # ByteLevel's byte->char map, in byte order
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, (chr(c) for c in cs)))
    assert set(table.values()) == set(bytes_to_unicode)
    vocab = {table[b]: b for b in range(256)}
    assert vocab_size == 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()


def save_reference(path, tensors):
    out = {}
    for k, v in tensors.items():
        v = v.detach().contiguous()
        out[k] = v if v.dtype == torch.int64 else v.float()
    # one metadata key: safetensors writes the metadata map in hash order, and one key
    # keeps the file byte-identical from run to run
    save_file(out, path, metadata={
        "generator": f"tools/gen_deepseek_fixtures.py prefill={PREFILL} decode={DECODE}"})


def gen_fixture(name, cfg, out_root, seed, official_py):
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    W = make_weights(cfg, gen)
    W_file = dict(W)
    fp8 = "quantization_config" in cfg
    if fp8:
        for k in list(W):
            if fp8_quantizable(k, cfg):
                q, s = fp8_quantize(W[k])
                W_file[k] = q
                W_file[k[:-len("weight")] + "weight_scale_inv"] = s
                W[k] = fp8_dequantize(q, s)  # the reference sees exactly what is stored
            elif not k.endswith("e_score_correction_bias"):
                # as released: everything else bf16, the correction bias f32
                W_file[k] = W[k].to(torch.bfloat16)
                W[k] = W_file[k].float()
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write(tiny_tokenizer_json(cfg["vocab_size"]))
    save_file({k: v.contiguous() for k, v in W_file.items()},
              os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    ids = torch.randint(0, cfg["vocab_size"], (N_TOKENS,), generator=gen)
    ref = OfficialRef(cfg, W)
    ref_logits, acts = ref.forward(ids)

    model = build_hf(cfg, W, d)
    router_diff = check_router(model, cfg, W, gen)
    hf_logits, hf_acts, dec_diff = hf_forward(model, cfg, ids)
    for what, count in ref.sensitivity.items():
        if what != "0.0 mask" or is_v3(cfg):  # softmax scores > 0: 0.0 == -inf for V2
            assert count > 0, f"{name}: fixture tokens do not tell apart '{what}'"
    report = {"router_random_tokens_where_0.0_mask_differs": router_diff,
              "fixture_tokens_changed_by": dict(ref.sensitivity),
              "hf_cached_decode_vs_full_maxabs": dec_diff}
    for k in hf_acts:
        if hf_acts[k] is None:
            continue
        dd = (hf_acts[k] - acts[k]).abs().max().item()
        assert dd < 1e-4, f"{name}: {k} HF vs official formulas differ by {dd}"
    d_logits = (hf_logits - ref_logits).abs().max().item()
    assert d_logits < 1e-4, f"{name}: logits HF vs official formulas differ by {d_logits}"
    report["hf_vs_officialref_logits_maxabs"] = d_logits

    tensors = {"input_ids": ids, "logits": hf_logits,
               "rope.inv_freq": ref.inv_freq,
               "attn.softmax_scale": torch.tensor([ref.scale])}
    tensors.update(acts)
    if n_mtp(cfg):
        mtp_ref = ref.mtp(ids, acts["final_norm"], acts)
        mtp_hf = hf_mtp(model, cfg, W, ids, acts["final_norm"])
        dm = (mtp_hf - mtp_ref).abs().max().item()
        assert dm < 1e-4, f"{name}: MTP HF layer vs official formulas differ by {dm}"
        report["mtp_hf_layer_vs_officialref_maxabs"] = dm
        tensors["mtp_logits"] = mtp_ref
        tensors.update({k: v for k, v in acts.items() if k.startswith("mtp.")})
    if fp8:
        k = "model.layers.0.mlp.gate_proj.weight"  # [160, 192]: 2x2 blocks, both edges
        tensors["dequant." + k] = W[k]
    if official_py:
        ol = run_official_model_py(official_py, cfg, W_file, ids)
        do = (ol - hf_logits).abs().max().item()
        assert do < 1e-4, f"{name}: official model.py differs by {do}"
        report["official_model_py_vs_hf_logits_maxabs"] = do
    save_reference(os.path.join(d, "reference.safetensors"), tensors)
    sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    print(f"{name}: {json.dumps(report)}")
    print(f"  files: {sizes}")
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "deepseek"))
    ap.add_argument("--official-model-py", default=None,
                    help="DeepSeek-V3 inference/model.py to run as a third check")
    ap.add_argument("--only", default=None, help="one fixture name")
    args = ap.parse_args()
    torch.manual_seed(0)
    seeds = {"v2_lite": 1, "v2": 2, "v3": 3, "v3_fp8": 4}
    for name, cfg in fixture_configs().items():
        if args.only and name != args.only:
            continue
        gen_fixture(name, cfg, args.out, seeds[name], args.official_model_py)
    for p in dict.fromkeys(PATCHES):
        print("patch:", p)


if __name__ == "__main__":
    main()
