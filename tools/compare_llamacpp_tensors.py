#!/usr/bin/env python3
"""Compares sputnik's intermediate tensors with llama.cpp's, op by op, on one prompt (dev tool;
not run in CI).

llama.cpp side: llama-cpp-python's high-level Llama (same settings as tools/gen_llamacpp_goldens.py:
n_batch 512, f16 KV cache, flash attention off) with an eval callback (cb_eval) that copies every
f32 graph node by its ggml name ("attn_norm-0", "Qcur-0", ...; the last node of a name wins, so
"Qcur-0" is q after rope). sputnik side: `sputnik run` with SPUTNIK_DUMP_TENSORS=DIR, which makes
models/llama.cpp append each tap (same names) to DIR/<name>-<layer>.f32.

Both engines see the prompt as one batch, then --n-predict greedy tokens one at a time (sputnik's
greedy tokens are fed to both, so the decode steps compare the same inputs). For each tensor in
graph order it prints the number of elements whose bits differ and the largest difference, and
stops at --stop-after differing tensors (the first one is where to look).

Usage: tools/compare_llamacpp_tensors.py --sputnik build-parity/sputnik [--prompt TEXT]
           [--n-predict N] [MODEL]
"""
import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

GGML_TYPE_F32 = 0


class GgmlTensor(ctypes.Structure):
    # The head of struct ggml_tensor (ggml/include/ggml.h, GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64,
    # GGML_MAX_SRC 10, GGML_MAX_NAME 64).
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p),
                ("ne", ctypes.c_int64 * 4), ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int),
                ("op_params", ctypes.c_int32 * 16), ("flags", ctypes.c_int32),
                ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p),
                ("name", ctypes.c_char * 64)]


def tensor_to_numpy(t):
    """[ne3, ne2, ne1, ne0] float32 copy of an f32 tensor in host memory, any strides."""
    ne = [t.ne[i] for i in range(4)]
    nb = [t.nb[i] for i in range(4)]
    span = sum((n - 1) * s for n, s in zip(ne, nb)) + 4
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * span).from_address(t.data))
    view = np.lib.stride_tricks.as_strided(raw.view(np.float32) if nb[0] == 4 and span % 4 == 0
                                           else np.frombuffer(raw.tobytes(), np.float32),
                                           shape=ne[::-1], strides=nb[::-1])
    return np.array(view, dtype=np.float32)


def llamacpp_tensors(model, ids, continuation, threads):
    """{name: [array per decode call]} of every f32 node, prompt as one batch then one token."""
    import llama_cpp

    captured = {}
    current = {}

    @llama_cpp.llama_cpp.ggml_backend_sched_eval_callback
    def on_eval(ptr, ask, _user):
        t = ctypes.cast(ptr, ctypes.POINTER(GgmlTensor)).contents
        if ask:
            return t.type == GGML_TYPE_F32
        name = t.name.decode()
        if name in current:  # an earlier node of the same name (e.g. Qcur before rope)
            current[name + "#" + str(sum(k.startswith(name + "#") for k in current))] = current[name]
        current[name] = tensor_to_numpy(t)
        return True

    init = llama_cpp.llama_cpp.llama_init_from_model

    def init_with_callback(model_ptr, params):
        params.cb_eval = on_eval
        return init(model_ptr, params)

    llama_cpp._internals.llama_cpp.llama_init_from_model = init_with_callback
    try:
        llm = llama_cpp.Llama(model, n_ctx=1024, n_batch=512, logits_all=True, verbose=False,
                              n_threads=threads, seed=0)
    finally:
        llama_cpp._internals.llama_cpp.llama_init_from_model = init
    for step in [ids] + [[t] for t in continuation]:
        current.clear()
        llm.eval(step)
        for name, a in current.items():
            captured.setdefault(name, []).append(a)
    logits = np.array(llm.scores[: llm.n_tokens], dtype=np.float32)
    return captured, logits, llm


def sputnik_tensors(binary, model, prompt, n_predict, threads, isa):
    out = tempfile.mkdtemp(prefix="sputnik_taps_")
    env = dict(os.environ, SPUTNIK_DUMP_TENSORS=out)
    if isa:
        env["SPUTNIK_ISA"] = isa
    subprocess.run([binary, "run", "-m", model, "-t", str(threads), "-c", "1024", "--temp", "0",
                    "-p", prompt, "-n", str(n_predict)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    taps = {}
    for f in os.listdir(out):
        taps[f[: -len(".f32")]] = np.fromfile(os.path.join(out, f), dtype=np.float32)
    shutil.rmtree(out)
    return taps


# sputnik tap name -> llama.cpp node name ("{}" = layer), in graph order.
LAYER_TAPS = ["attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "attn_out", "ffn_inp", "ffn_norm",
              "ffn_out", "l_out"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?", default=os.path.expanduser(
        "~/.cache/sputnik/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--sputnik", default="build-parity/sputnik")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--n-predict", type=int, default=0, help="greedy tokens to compare as well")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--isa", default="", help="SPUTNIK_ISA for sputnik")
    ap.add_argument("--stop-after", type=int, default=3, help="differing tensors to show")
    ap.add_argument("--list", action="store_true", help="print llama.cpp's node names and exit")
    args = ap.parse_args()

    taps = sputnik_tensors(args.sputnik, args.model, args.prompt, args.n_predict, args.threads,
                           args.isa)
    import llama_cpp
    probe = llama_cpp.Llama(args.model, vocab_only=True, verbose=False)
    ids = probe.tokenize(args.prompt.encode("utf-8"), add_bos=True, special=True)
    # sputnik's token ids as it saw them (tap "inp_tokens"): the prompt, then its greedy tokens.
    seen = [int(t) for t in taps["inp_tokens--1"]]
    if seen[: len(ids)] != ids:
        sys.exit(f"the tokenisations differ: llama.cpp {ids}, sputnik {seen[: len(ids)]}")
    continuation = seen[len(ids):]
    nodes, logits, _ = llamacpp_tensors(args.model, ids, continuation, args.threads)
    print(f"prompt {len(ids)} tokens, then {len(continuation)} decode steps")
    if args.list:
        print(" ".join(nodes))
        return
    n_layers = sum(1 for n in nodes if re.fullmatch(r"l_out-\d+", n))
    order = [("inp_embd", "inp_embd--1", "inp_embd")]
    for layer in range(n_layers):
        order += [(f"{n}-{layer}", f"{n}-{layer}", n) for n in LAYER_TAPS]
    order.append(("result_norm", "result_norm--1", "result_norm"))
    shown = 0
    for node, tap, base in order:
        if node not in nodes or tap not in taps:
            print(f"{node:16s} missing ({'llama.cpp' if node not in nodes else 'sputnik'})")
            continue
        steps = nodes[node]
        if base == "result_norm":  # llama.cpp normalises every row (logits_all), sputnik the last
            steps = [a.reshape(-1, a.shape[-1])[-1] for a in steps]
        ref = np.concatenate([a.reshape(-1) for a in steps])
        ours = taps[tap]
        if base == "Qcur":  # sputnik taps q after its f16 rounding (ggml rounds inside mul_mat)
            ref = ref.astype(np.float16).astype(np.float32)
        if ref.size != ours.size:
            print(f"{node:16s} sizes differ: llama.cpp {ref.size}, sputnik {ours.size}")
            continue
        differ = np.count_nonzero(ref.view(np.uint32) != ours.view(np.uint32))
        diff = np.abs(ref.astype(np.float64) - ours)
        print(f"{node:16s} {differ:7d} of {ref.size:7d} differ, max |diff| {diff.max():.3g} "
              f"(max |x| {np.abs(ref).max():.3g})")
        if differ:
            shown += 1
            if shown >= args.stop_after:
                break


if __name__ == "__main__":
    main()
