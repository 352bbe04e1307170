#!/usr/bin/env python3
"""Writes the tiny GGUF and safetensors fixtures of tests/gguf_test.cpp and
tests/safetensors_test.cpp into tests/data/formats/, with expected.json recording what each file
holds, as the Python writers (gguf, safetensors) were told. The C++ readers are checked against
these, never against their own output.

    python3 tools/gen_format_fixtures.py   # rewrites tests/data/formats/

Needs: pip packages gguf, safetensors, numpy. Deterministic (seeded), so rerunning gives the
same bytes unless a package changes its writer.
"""
import json
import math
import os
import shutil
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "formats")
rng = np.random.default_rng(1234)


def ggml_tensor(writer, expected, name, array, qtype=None):
    """Adds a tensor; records its PyTorch-order shape, ggml type and exact bytes."""
    if qtype is None or qtype in (Q.F32, Q.F16, Q.I8, Q.I32, Q.I64):
        writer.add_tensor(name, array)
        raw = array.tobytes()
        qtype = {np.dtype(np.float32): Q.F32, np.dtype(np.float16): Q.F16,
                 np.dtype(np.int8): Q.I8, np.dtype(np.int32): Q.I32,
                 np.dtype(np.int64): Q.I64}[array.dtype]
        shape = list(array.shape)
    else:
        data = gguf.quants.quantize(array, qtype)  # uint8, shape (..., row bytes)
        writer.add_tensor(name, data, raw_dtype=qtype)
        raw = data.tobytes()
        shape = list(array.shape)
    entry = {"name": name, "ggml_type": int(qtype), "shape": shape, "hex": raw.hex()}
    if array.dtype == np.float32 and qtype == Q.F32:
        entry["values"] = [float(x) for x in array.reshape(-1)]
    expected["tensors"].append(entry)


def write_gguf():
    path = os.path.join(OUT, "tiny.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    meta = {"general.architecture": {"type": "string", "value": "llama"}}

    def add(kind, key, value):
        getattr(w, "add_" + kind)(key, value)
        meta[key] = {"type": kind, "value": value}

    add("uint8", "test.u8", 200)
    add("int8", "test.i8", -100)
    add("uint16", "test.u16", 60000)
    add("int16", "test.i16", -30000)
    add("uint32", "test.u32", 4000000000)
    add("int32", "test.i32", -2000000000)
    add("float32", "test.f32", 0.5)
    add("uint64", "test.u64", 18000000000000000000)
    add("int64", "test.i64", -9000000000000000000)
    add("float64", "test.f64", 3.141592653589793)
    add("bool", "test.bool_true", True)
    add("bool", "test.bool_false", False)
    add("string", "test.string", "héllo, gguf")
    # add_string drops empty strings; add_key_value writes them.
    w.add_key_value("test.empty_string", "", gguf.GGUFValueType.STRING)
    meta["test.empty_string"] = {"type": "string", "value": ""}
    add("uint32", "llama.block_count", 2)
    # Arrays: the Python writer infers the element type from the values.
    w.add_array("test.array_str", ["a", "bc", "", "déf"])
    meta["test.array_str"] = {"type": "array", "element": "string", "value": ["a", "bc", "", "déf"]}
    w.add_key_value("test.array_i32", [1, -2, 3], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32)
    meta["test.array_i32"] = {"type": "array", "element": "int32", "value": [1, -2, 3]}
    w.add_key_value("test.array_u8", [0, 255], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT8)
    meta["test.array_u8"] = {"type": "array", "element": "uint8", "value": [0, 255]}
    w.add_key_value("test.array_f32", [0.25, -1.5], gguf.GGUFValueType.ARRAY,
                    gguf.GGUFValueType.FLOAT32)
    meta["test.array_f32"] = {"type": "array", "element": "float32", "value": [0.25, -1.5]}
    w.add_key_value("test.array_bool", [True, False, True], gguf.GGUFValueType.ARRAY,
                    gguf.GGUFValueType.BOOL)
    meta["test.array_bool"] = {"type": "array", "element": "bool", "value": [True, False, True]}
    nested = [[1, 2], [3]]
    w.add_key_value("test.array_nested", nested, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.ARRAY)
    meta["test.array_nested"] = {"type": "array", "element": "array", "value": nested}

    expected = {"file": "tiny.gguf", "version": 3, "alignment": 32, "metadata": meta, "tensors": []}
    ggml_tensor(w, expected, "f32_2x3", rng.standard_normal((2, 3)).astype(np.float32))
    ggml_tensor(w, expected, "f32_vec", rng.standard_normal(5).astype(np.float32))
    ggml_tensor(w, expected, "f32_3d", rng.standard_normal((2, 2, 3)).astype(np.float32))
    ggml_tensor(w, expected, "f16_3x4", rng.standard_normal((3, 4)).astype(np.float16))
    ggml_tensor(w, expected, "i32_vec", np.array([7, -8, 9], dtype=np.int32))
    ggml_tensor(w, expected, "i8_vec", np.array([1, -1, 127, -128], dtype=np.int8))
    ggml_tensor(w, expected, "q8_0_2x32", rng.standard_normal((2, 32)).astype(np.float32), Q.Q8_0)
    ggml_tensor(w, expected, "q4_0_1x64", rng.standard_normal((1, 64)).astype(np.float32), Q.Q4_0)
    ggml_tensor(w, expected, "q4_1_2x32", rng.standard_normal((2, 32)).astype(np.float32), Q.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def write_gguf_aligned():
    """A second file with general.alignment = 64 and a BF16 tensor (raw bytes)."""
    path = os.path.join(OUT, "align64.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_custom_alignment(64)
    expected = {"file": "align64.gguf", "version": 3, "alignment": 64, "tensors": []}
    ggml_tensor(w, expected, "a", rng.standard_normal(3).astype(np.float32))
    ggml_tensor(w, expected, "b", rng.standard_normal((2, 5)).astype(np.float32))
    bf16 = (rng.standard_normal((2, 4)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor("bf16_2x4", bf16.view(np.uint8).reshape(2, 8), raw_dtype=Q.BF16)
    expected["tensors"].append({"name": "bf16_2x4", "ggml_type": int(Q.BF16), "shape": [2, 4],
                                "hex": bf16.tobytes().hex()})
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def write_safetensors_single():
    d = os.path.join(OUT, "st_single")
    os.makedirs(d)
    tensors = {
        "embed.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "norm.weight": rng.standard_normal(3).astype(np.float16),
        "ids": np.array([1, 2, 3, 4, 5], dtype=np.int64),
        "counts": np.array([[1, 2], [3, 4]], dtype=np.int32),
        "bytes": np.array([-1, 2, -3], dtype=np.int8),
        "scalar": np.array(2.5, dtype=np.float32),
    }
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": "llama", "hidden_size": 3, "num_hidden_layers": 1}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    return {"dir": "st_single", "config": config, "tensors": record(tensors)}


def bf16_bytes(x):
    return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write_safetensors_sharded():
    """Two shards and an index; BF16 stored as uint16 bits through a hand-made header."""
    d = os.path.join(OUT, "st_sharded")
    os.makedirs(d)
    shard1 = {"layers.0.w": rng.standard_normal((2, 3)).astype(np.float32),
              "layers.0.b": rng.standard_normal(3).astype(np.float32)}
    shard2 = {"layers.1.w": rng.standard_normal((3, 2)).astype(np.float16)}
    names = {"model-00001-of-00002.safetensors": shard1, "model-00002-of-00002.safetensors": shard2}
    weight_map = {}
    for file, tensors in names.items():
        save_file(tensors, os.path.join(d, file))
        for k in tensors:
            weight_map[k] = file
    # A BF16 tensor in shard 2 too, written by hand (numpy has no bfloat16).
    bf = bf16_bytes(rng.standard_normal((2, 2)))
    raw_write(os.path.join(d, "model-00002-of-00002.safetensors"),
              {"layers.1.w": ("F16", [3, 2], shard2["layers.1.w"].tobytes()),
               "layers.1.bf": ("BF16", [2, 2], bf.tobytes())})
    weight_map["layers.1.bf"] = "model-00002-of-00002.safetensors"
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)
    config = {"model_type": "deepseek_v3", "hidden_size": 3}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    rec = record({**shard1, **shard2})
    rec["layers.1.bf"] = {"dtype": "BF16", "shape": [2, 2], "hex": bf.tobytes().hex()}
    return {"dir": "st_sharded", "config": config, "tensors": rec}


def raw_write(path, entries):
    """Writes a safetensors file by hand: entries = name -> (dtype, shape, raw bytes)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, raw) in entries.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)  # pad as the safetensors crate does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def write_safetensors_fp8():
    """DeepSeek-V3 style FP8 weight [129, 8] (raw e4m3 bytes) with its [2, 1] fp32 scale_inv."""
    d = os.path.join(OUT, "st_fp8")
    os.makedirs(d)
    w = rng.integers(0, 256, size=(129, 8), dtype=np.uint8)
    w[w == 0x7F] = 0  # avoid NaN encodings (0x7F/0xFF) so the bytes are ordinary values
    w[w == 0xFF] = 0
    scale = np.array([[0.5], [2.0]], dtype=np.float32)
    norm = rng.standard_normal(8).astype(np.float32)
    raw_write(os.path.join(d, "model.safetensors"),
              {"proj.weight": ("F8_E4M3", [129, 8], w.tobytes()),
               "proj.weight_scale_inv": ("F32", [2, 1], scale.tobytes()),
               "norm.weight": ("F32", [8], norm.tobytes())})
    return {"dir": "st_fp8", "tensors": {
        "proj.weight": {"dtype": "F8_E4M3", "shape": [129, 8], "hex": w.tobytes().hex()},
        "proj.weight_scale_inv": {"dtype": "F32", "shape": [2, 1], "hex": scale.tobytes().hex()},
        "norm.weight": {"dtype": "F32", "shape": [8], "hex": norm.tobytes().hex()}}}


def record(tensors):
    names = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64",
             np.dtype(np.int32): "I32", np.dtype(np.int8): "I8"}
    return {k: {"dtype": names[v.dtype], "shape": list(v.shape), "hex": v.tobytes().hex()}
            for k, v in tensors.items()}


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    expected = {
        "gguf": [write_gguf(), write_gguf_aligned()],
        "safetensors": [write_safetensors_single(), write_safetensors_sharded(),
                        write_safetensors_fp8()],
        "generator": {"gguf": gguf.__version__ if hasattr(gguf, "__version__") else "?",
                      "numpy": np.__version__},
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
