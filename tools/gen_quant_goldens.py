#!/usr/bin/env python3
"""Writes the dequantisation goldens of tests/dequant_test.cpp into tests/data/quants/.

The references are gguf-py (gguf.quants.quantize / dequantize, a numpy port of ggml's
reference code) and PyTorch's float8_e4m3fn. For formats gguf-py can quantise, the input is
random f32 and the bytes are gguf-py's; for the K-quants, which gguf-py only dequantises, the
bytes are random valid blocks. Every file is:

    uint32 n_elements, uint32 n_bytes, uint32 has_input,
    float32 input[n_elements]   (only if has_input),
    uint8   bytes[n_bytes]       (the encoded row),
    float32 expected[n_elements] (the reference's dequantisation)

Run: python3 tools/gen_quant_goldens.py   (deterministic; seed fixed)
"""
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "quants")
rng = np.random.default_rng(1234)


def write(name, inp, raw, expected):
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    expected = np.ascontiguousarray(expected, dtype=np.float32).reshape(-1)
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        f.write(struct.pack("<III", expected.size, raw.size, inp is not None))
        if inp is not None:
            f.write(np.ascontiguousarray(inp, dtype=np.float32).reshape(-1).tobytes())
        f.write(raw.tobytes())
        f.write(expected.tobytes())


def f32_input(n_blocks, block):
    """Random rows with edge cases: an all-zero block, ties, a dominant negative, tiny values."""
    x = rng.standard_normal((n_blocks, block)).astype(np.float32)
    x *= np.exp(rng.uniform(-6, 3, size=(n_blocks, 1))).astype(np.float32)
    x[0] = 0
    # Many exact ties in x * id. (Not a block of signed zeros: for -0.0 first gguf-py's argmax
    # gives d = +0 where ggml's C gives -0; we follow ggml.)
    x[1] = np.round(rng.standard_normal(block) * 4).astype(np.float32) / 4
    x[2, 5] = -50 * np.abs(x[2]).max()      # the signed max is negative
    x[3] *= 1e-6                             # fp16 subnormal scales
    x[4, :] = 1.0                            # constant block
    return x.reshape(-1)


def legacy(name, qtype, n_blocks=24):
    x = f32_input(n_blocks, 32)
    raw = quants.quantize(x.reshape(1, -1), qtype)
    write(name, x, raw, quants.dequantize(raw, qtype))


def random_fp16(shape, lo, hi):
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), size=shape)).astype(np.float16)
    return mag.view(np.uint8).reshape(shape + (2,))


def kquant(name, qtype, n_blocks=6):
    block_bytes = quants.GGML_QUANT_SIZES[qtype][1]
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    # Valid, finite fp16 scales (random bits would include inf/NaN).
    if qtype == T.Q6_K:
        raw[:, -2:] = random_fp16((n_blocks,), 1e-4, 1.0)
    else:
        raw[:, 0:2] = random_fp16((n_blocks,), 1e-4, 1.0)
        raw[:, 2:4] = random_fp16((n_blocks,), 1e-4, 1.0)
    write(name, None, raw, quants.dequantize(raw.reshape(1, -1), qtype))


def main():
    os.makedirs(OUT, exist_ok=True)
    legacy("q8_0", T.Q8_0)
    legacy("q4_0", T.Q4_0)
    legacy("q4_1", T.Q4_1)
    legacy("q5_0", T.Q5_0)
    legacy("q5_1", T.Q5_1)
    kquant("q4_k", T.Q4_K)
    kquant("q5_k", T.Q5_K)
    kquant("q6_k", T.Q6_K)

    # F16: numpy's round-to-nearest-even conversion, across normal, subnormal and overflow range.
    x = (rng.standard_normal(1024) * np.exp(rng.uniform(-20, 12, 1024))).astype(np.float32)
    x[:4] = [0.0, -0.0, 65519.0, 65520.0]
    with np.errstate(over="ignore"):
        h = x.astype(np.float16)
    write("f16", x, h.view(np.uint8), h.astype(np.float32))
    # BF16: gguf-py's quantiser (ggml_compute_fp32_to_bf16, round to nearest even).
    raw = quants.quantize(x.reshape(1, -1), T.BF16)
    write("bf16", x, raw, quants.dequantize(raw, T.BF16))

    import torch

    # FP8 E4M3 (float8_e4m3fn): every code but the two NaNs.
    codes = np.array([c for c in range(256) if (c & 0x7F) != 0x7F], dtype=np.uint8)
    vals = torch.from_numpy(codes).view(torch.float8_e4m3fn).to(torch.float32).numpy()
    write("f8_e4m3", None, codes, vals)
    # DeepSeek-V3 block-scaled FP8 weight, 130 x 132 (partial 128-blocks in both dimensions):
    # bytes = fp8 codes then fp32 scale_inv[2, 2]; expected = weight_dequant (fp8 * scale).
    rows, cols = 130, 132
    w = torch.from_numpy(rng.standard_normal((rows, cols)).astype(np.float32) * 100).to(torch.float8_e4m3fn)
    s = torch.from_numpy(rng.uniform(1e-3, 1e-1, size=(2, 2)).astype(np.float32))
    deq = w.to(torch.float32) * s.repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
    raw = np.concatenate([w.view(torch.uint8).numpy().reshape(-1), s.numpy().view(np.uint8).reshape(-1)])
    write("f8_e4m3_blocks_130x132", None, raw, deq.numpy())


if __name__ == "__main__":
    main()
