#!/usr/bin/env python3
"""Random-weight GGUF models of real shapes, for benchmarks (never for correctness).

  python3 tools/make_bench_models.py MODEL QUANT [--layers N] [--out DIR] [--seed S]
    MODEL  v2-lite   DeepSeek-V2-Lite shape, llama.cpp arch `deepseek2`
           r1-qwen   DeepSeek-R1-Distill-Qwen-1.5B shape, llama.cpp arch `qwen2`
    QUANT  q4_0 | q4_k | q8_0
    --layers N  keep only the first N blocks (v2-lite: block 0 dense, the rest MoE)

  python3 tools/make_bench_models.py requantise SOURCE.gguf QUANT [--out FILE]
    Real weights in another type: every quantised 2-D tensor of SOURCE dequantised (gguf-py,
    bit-exact with ggml) and quantised to QUANT (gguf-py's quantiser, as llama-quantize's
    reference path); F32 tensors and all metadata but general.file_type copied. The default
    output is bench/<source name>-<QUANT>.gguf, e.g. SmolLM2-135M-Instruct.Q4_1-q8_0.gguf.
    QUANT: q8_0 or q4_0 (gguf-py 0.19 has no K-quant quantiser).

Files go to ${SPUTNIK_MODELS:-~/.cache/sputnik/models}/bench/, named e.g.
bench-v2-lite-q4_k.gguf or bench-v2-lite-L4-q8_0.gguf; never into git. bench/models.md
lists them with sizes.

Metadata and tensor names are llama.cpp's (as its convert_hf_to_gguf.py writes them for
the real checkpoints), so the same file runs in llama.cpp for side-by-side numbers.
Weights are random bytes with every fp16 block scale overwritten by a small finite value,
so dequantised weights are O(1/sqrt(fan_in)) and activations stay finite. Tensors whose
row length is not a multiple of the format's block take llama.cpp's fallback type, as
llama-quantize does (Q4_K rows of 1408, 10944 or 128 -> Q5_0). Norms, biases and the MoE
router stay F32. The vocabulary is synthetic: 256 byte tokens of GPT-2's byte-level
alphabet, 26*26 lower-case letter pairs with their merges, the real special-token ids,
and "[PADn]" unused tokens up to the model's vocab size.
"""

import argparse
import os
import sys
import zlib

import numpy as np
import gguf

Q = gguf.GGMLQuantizationType

# ---------------------------------------------------------------------------------------
# shapes (HF config values of the released checkpoints)
# ---------------------------------------------------------------------------------------

V2_LITE = dict(
    n_layer=27, n_embd=2048, n_head=16, kv_lora_rank=512, qk_nope=128, qk_rope=64,
    v_head=128, n_expert=64, n_expert_used=6, n_shared=2, n_ff_exp=1408, n_ff=10944,
    n_dense=1, n_vocab=102400, ctx=163840, rope_theta=10000.0, yarn_factor=40.0,
    yarn_orig=4096, yarn_beta_fast=32.0, yarn_beta_slow=1.0, mscale_all_dim=0.707,
    eps=1e-6, bos=100000, eos=100001, pre="deepseek-llm",
    name="bench DeepSeek-V2-Lite shape (random weights)")

R1_QWEN = dict(
    n_layer=28, n_embd=1536, n_head=12, n_head_kv=2, n_ff=8960, n_vocab=151936,
    ctx=131072, rope_theta=10000.0, eps=1e-6, bos=151646, eos=151643,
    pre="deepseek-r1-qwen",
    name="bench DeepSeek-R1-Distill-Qwen-1.5B shape (random weights)")

QUANTS = {"q4_0": Q.Q4_0, "q4_k": Q.Q4_K, "q8_0": Q.Q8_0}
FILE_TYPE = {Q.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0, Q.Q4_K: gguf.LlamaFileType.MOSTLY_Q4_K_S,
             Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0}
FALLBACK = {Q.Q4_K: Q.Q5_0}  # llama-quantize's fallback when a row is not 256-divisible

# Byte offsets of the fp16 scale fields inside one block, and the scale to write there:
# chosen so dequantised values have a std of about 1/sqrt(fan_in) for fan_in ~ 2048.
# Q4_0: w = d*(q-8), q in 0..15;  Q5_0: w = d*(q-16), q in 0..31;  Q8_0: w = d*q, |q|<=127;
# Q4_K: w = d*sc*q - dmin*m with 6-bit sc, m.
SCALE_FIELDS = {
    Q.Q4_0: [(0, 4e-3)],
    Q.Q5_0: [(0, 2e-3)],
    Q.Q8_0: [(0, 3e-4)],
    Q.Q4_K: [(0, 1e-4), (2, 7.5e-4)],  # dmin*m offsets the mean of d*sc*q
}


def quant_type_for(ne0, qtype):
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if ne0 % block == 0:
        return qtype
    fb = FALLBACK.get(qtype, Q.Q8_0)
    assert ne0 % gguf.GGML_QUANT_SIZES[fb][0] == 0, (ne0, fb)
    return fb


def random_tensor(name, ne, qtype, seed):
    """ne: GGUF dims, fastest first. Returns (numpy array of the stored bytes or f32
    values, qtype)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()) ^ seed)
    n = int(np.prod(ne))
    if qtype == Q.F32:
        if name.endswith("norm.weight"):
            return np.ones(n, np.float32), Q.F32
        if name.endswith(".bias"):
            return (rng.standard_normal(n, dtype=np.float32) * 0.02), Q.F32
        return (rng.standard_normal(n, dtype=np.float32) / np.sqrt(ne[0])).astype(np.float32), Q.F32
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = n // block
    data = np.frombuffer(rng.bytes(n_blocks * type_size), np.uint8).reshape(n_blocks, type_size).copy()
    for off, base in SCALE_FIELDS[qtype]:
        s = (base * rng.uniform(0.5, 1.5, n_blocks)).astype(np.float16)
        data[:, off:off + 2] = s.view(np.uint8).reshape(n_blocks, 2)
    return data.reshape(-1), qtype


# ---------------------------------------------------------------------------------------
# tensor lists: (name, ne fastest-first, "q" quantised | "f" F32)
# ---------------------------------------------------------------------------------------


def deepseek2_tensors(c, n_layer):
    E, H = c["n_embd"], c["n_head"]
    t = [("token_embd.weight", [E, c["n_vocab"]], "q"),
         ("output_norm.weight", [E], "f"),
         ("output.weight", [E, c["n_vocab"]], "q")]
    for i in range(n_layer):
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", [E], "f"),
              # V2-Lite has no q LoRA: one q projection (heads * (nope + rope))
              (p + "attn_q.weight", [E, H * (c["qk_nope"] + c["qk_rope"])], "q"),
              (p + "attn_kv_a_mqa.weight", [E, c["kv_lora_rank"] + c["qk_rope"]], "q"),
              (p + "attn_kv_a_norm.weight", [c["kv_lora_rank"]], "f"),
              # kv_b split per head as the converter writes it: k_b transposed for absorption
              (p + "attn_k_b.weight", [c["qk_nope"], c["kv_lora_rank"], H], "q"),
              (p + "attn_v_b.weight", [c["kv_lora_rank"], c["v_head"], H], "q"),
              (p + "attn_output.weight", [H * c["v_head"], E], "q"),
              (p + "ffn_norm.weight", [E], "f")]
        if i < c["n_dense"]:
            t += [(p + "ffn_gate.weight", [E, c["n_ff"]], "q"),
                  (p + "ffn_up.weight", [E, c["n_ff"]], "q"),
                  (p + "ffn_down.weight", [c["n_ff"], E], "q")]
        else:
            X, F, S = c["n_expert"], c["n_ff_exp"], c["n_ff_exp"] * c["n_shared"]
            t += [(p + "ffn_gate_inp.weight", [E, X], "f"),
                  (p + "ffn_gate_exps.weight", [E, F, X], "q"),
                  (p + "ffn_up_exps.weight", [E, F, X], "q"),
                  (p + "ffn_down_exps.weight", [F, E, X], "q"),
                  (p + "ffn_gate_shexp.weight", [E, S], "q"),
                  (p + "ffn_up_shexp.weight", [E, S], "q"),
                  (p + "ffn_down_shexp.weight", [S, E], "q")]
    return t


def qwen2_tensors(c, n_layer):
    E, hd = c["n_embd"], c["n_embd"] // c["n_head"]
    kv = hd * c["n_head_kv"]
    t = [("token_embd.weight", [E, c["n_vocab"]], "q"),
         ("output_norm.weight", [E], "f"),
         ("output.weight", [E, c["n_vocab"]], "q")]
    for i in range(n_layer):
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", [E], "f"),
              (p + "attn_q.weight", [E, E], "q"), (p + "attn_q.bias", [E], "f"),
              (p + "attn_k.weight", [E, kv], "q"), (p + "attn_k.bias", [kv], "f"),
              (p + "attn_v.weight", [E, kv], "q"), (p + "attn_v.bias", [kv], "f"),
              (p + "attn_output.weight", [E, E], "q"),
              (p + "ffn_norm.weight", [E], "f"),
              (p + "ffn_gate.weight", [E, c["n_ff"]], "q"),
              (p + "ffn_up.weight", [E, c["n_ff"]], "q"),
              (p + "ffn_down.weight", [c["n_ff"], E], "q")]
    return t


# ---------------------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------------------


def byte_level_alphabet():
    """GPT-2's bytes_to_unicode: byte b -> printable char, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def add_vocab(w, c):
    tokens = byte_level_alphabet()
    types = [gguf.TokenType.NORMAL] * 256
    merges = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    for a in letters:
        for b in letters:
            tokens.append(a + b)
            types.append(gguf.TokenType.NORMAL)
            merges.append(f"{a} {b}")
    specials = {c["bos"]: "<｜begin▁of▁sentence｜>", c["eos"]: "<｜end▁of▁sentence｜>"}
    while len(tokens) < c["n_vocab"]:
        i = len(tokens)
        tokens.append(specials.get(i, f"[PAD{i}]"))
        types.append(gguf.TokenType.CONTROL if i in specials else gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(c["pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(c["bos"])
    w.add_eos_token_id(c["eos"])
    w.add_add_bos_token(True)


def add_deepseek2_metadata(w, c, n_layer):
    a = "deepseek2"
    w.add_block_count(n_layer)
    w.add_context_length(c["ctx"])
    w.add_embedding_length(c["n_embd"])
    w.add_feed_forward_length(c["n_ff"])
    w.add_head_count(c["n_head"])
    w.add_head_count_kv(1)  # MLA as MQA over the latent, as the converter writes it
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["eps"])
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(c["yarn_factor"])
    w.add_rope_scaling_orig_ctx_len(c["yarn_orig"])
    w.add_uint32(f"{a}.vocab_size", c["n_vocab"])
    w.add_float32(f"{a}.rope.scaling.yarn_beta_fast", c["yarn_beta_fast"])
    w.add_float32(f"{a}.rope.scaling.yarn_beta_slow", c["yarn_beta_slow"])
    # the converter stores 0.1 * mscale_all_dim here; llama.cpp divides by 0.1 on load
    w.add_float32(f"{a}.rope.scaling.yarn_log_multiplier", 0.1 * c["mscale_all_dim"])
    w.add_uint32(f"{a}.leading_dense_block_count", c["n_dense"])
    # llama.cpp reads q_lora_rank unless n_layer is 26 or 27 (its V2-Lite test); 0 = no
    # q LoRA, so that --layers N files load there too
    w.add_uint32(f"{a}.attention.q_lora_rank", 0)
    w.add_uint32(f"{a}.attention.kv_lora_rank", c["kv_lora_rank"])
    w.add_uint32(f"{a}.attention.key_length", c["kv_lora_rank"] + c["qk_rope"])
    w.add_uint32(f"{a}.attention.value_length", c["kv_lora_rank"])
    w.add_uint32(f"{a}.attention.key_length_mla", c["qk_nope"] + c["qk_rope"])
    w.add_uint32(f"{a}.attention.value_length_mla", c["v_head"])
    w.add_uint32(f"{a}.expert_feed_forward_length", c["n_ff_exp"])
    w.add_uint32(f"{a}.expert_count", c["n_expert"])
    w.add_uint32(f"{a}.expert_used_count", c["n_expert_used"])
    w.add_uint32(f"{a}.expert_shared_count", c["n_shared"])
    w.add_uint32(f"{a}.expert_group_count", 1)
    w.add_uint32(f"{a}.expert_group_used_count", 1)
    w.add_float32(f"{a}.expert_weights_scale", 1.0)
    w.add_uint32(f"{a}.expert_gating_func", 1)  # softmax
    w.add_uint32(f"{a}.rope.dimension_count", c["qk_rope"])


def add_qwen2_metadata(w, c, n_layer):
    w.add_block_count(n_layer)
    w.add_context_length(c["ctx"])
    w.add_embedding_length(c["n_embd"])
    w.add_feed_forward_length(c["n_ff"])
    w.add_head_count(c["n_head"])
    w.add_head_count_kv(c["n_head_kv"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["eps"])


MODELS = {
    "v2-lite": ("deepseek2", V2_LITE, deepseek2_tensors, add_deepseek2_metadata),
    "r1-qwen": ("qwen2", R1_QWEN, qwen2_tensors, add_qwen2_metadata),
}


def models_dir():
    return os.environ.get("SPUTNIK_MODELS") or os.path.join(
        os.path.expanduser("~"), ".cache", "sputnik", "models")


def make(model, quant, layers=None, out=None, seed=0):
    arch, c, tensor_fn, meta_fn = MODELS[model]
    qtype = QUANTS[quant]
    n_layer = layers or c["n_layer"]
    assert 1 <= n_layer <= c["n_layer"]
    if out is None:
        tag = f"-L{n_layer}" if n_layer != c["n_layer"] else ""
        out = os.path.join(models_dir(), "bench", f"bench-{model}{tag}-{quant}.gguf")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"

    w = gguf.GGUFWriter(tmp, arch)
    w.add_name(c["name"] + (f", first {n_layer} layers" if n_layer != c["n_layer"] else ""))
    w.add_file_type(FILE_TYPE[qtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    meta_fn(w, c, n_layer)
    add_vocab(w, c)

    plan = []
    for name, ne, kind in tensor_fn(c, n_layer):
        t = Q.F32 if kind == "f" else quant_type_for(ne[0], qtype)
        n = int(np.prod(ne))
        if t == Q.F32:
            nbytes = 4 * n
            w.add_tensor_info(name, list(reversed(ne)), np.dtype(np.float32), nbytes)
        else:
            block, size = gguf.GGML_QUANT_SIZES[t]
            nbytes = n // block * size
            # byte shape of a quantised tensor: rows of ne[0] / block * size bytes
            bshape = list(reversed(ne[1:])) + [ne[0] // block * size]
            w.add_tensor_info(name, bshape, np.dtype(np.uint8), nbytes, raw_dtype=t)
        plan.append((name, ne, t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    counts = {}
    for name, ne, t in plan:
        data, _ = random_tensor(name, ne, t, seed)
        w.write_tensor_data(data)
        counts[t.name] = counts.get(t.name, 0) + 1
    w.close()
    os.replace(tmp, out)
    print(f"{out}: {os.path.getsize(out) / 2**30:.2f} GiB, {len(plan)} tensors {counts}")
    return out


def requantise(source, quant, out=None):
    """Copies `source` with its quantised tensors requantised to `quant` (see the docstring)."""
    qtype = QUANTS[quant]
    r = gguf.GGUFReader(source)
    arch = r.fields["general.architecture"].contents()
    if out is None:
        stem = os.path.splitext(os.path.basename(source))[0]
        out = os.path.join(models_dir(), "bench", f"{stem}-{quant}.gguf")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    w = gguf.GGUFWriter(tmp, arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub_type=sub_type)
    w.add_file_type(FILE_TYPE[qtype])
    counts = {}
    for t in r.tensors:
        if t.tensor_type in (Q.F32, Q.F16, Q.BF16) or len(t.shape) < 2:
            data, raw_type = np.array(t.data), t.tensor_type
        else:
            values = gguf.quants.dequantize(t.data, t.tensor_type)  # [rows, cols] f32
            raw_type = quant_type_for(int(t.shape[0]), qtype)
            data = gguf.quants.quantize(values, raw_type)
        w.add_tensor(t.name, data, raw_dtype=raw_type)
        counts[raw_type.name] = counts.get(raw_type.name, 0) + 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)
    print(f"{out}: {os.path.getsize(out) / 2**30:.2f} GiB, {len(r.tensors)} tensors {counts}")
    return out


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "requantise":
        ap = argparse.ArgumentParser(description="requantise a GGUF file's weights")
        ap.add_argument("command")
        ap.add_argument("source")
        ap.add_argument("quant", choices=["q4_0", "q8_0"])
        ap.add_argument("--out", default=None)
        args = ap.parse_args()
        if not os.path.isfile(args.source):
            ap.error(f"no such file: {args.source}")
        requantise(args.source, args.quant, args.out)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("quant", choices=sorted(QUANTS))
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    make(args.model, args.quant, args.layers, args.out, args.seed)


if __name__ == "__main__":
    sys.exit(main())
