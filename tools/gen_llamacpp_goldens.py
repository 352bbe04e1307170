#!/usr/bin/env python3
"""Records llama.cpp's view of the demo model as golden data for tests/llamacpp_golden_test.cpp.

For each fixed prompt: the prompt token ids, the top-1 token at every prompt position (and its
margin over the runner-up), the top-K logits at every position, and a 64-token greedy
continuation (argmax of llama.cpp's logits, fed back one token at a time, end-of-generation tokens
included as ordinary tokens). The same is run with an f32 KV cache instead of llama.cpp's default
f16 to measure llama.cpp's own numerical noise on this (sensitive) model. Also llama.cpp's perplexity on tests/data/perplexity/, computed from
llama.cpp's logits exactly as tools/perplexity/perplexity.cpp does (chunks of n_ctx, first token of
each chunk replaced by BOS when the vocab adds one, second half of each chunk scored).

Usage: pip install llama-cpp-python==0.3.36   (built from source; CMAKE_ARGS="-DGGML_NATIVE=ON")
       tools/gen_llamacpp_goldens.py [MODEL] [--out tests/data/llamacpp]
"""
import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PPL_TEXT = os.path.join(REPO, "tests/data/perplexity/python_execmodel.txt")
PPL_TEXT_SHA256 = "9eb62d31ad96dde5f9344da239d7492fe13a2f9636d8564239d9c2e760a94973"
PPL_CTX = 512

PROMPTS = [
    "The capital of France is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Once upon a time, in a small village at the edge of the forest,",
    "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n",
    "Les pommes sont rouges. Äpfel sind rot. りんごは赤い。🍎 Apples are",
]
TOP_K = 20
N_CONTINUE = 64


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def log_softmax_at(row, token):
    # llama.cpp perplexity.cpp log_softmax(): max in float, sum of expf in double.
    row = row.astype(np.float32)
    m = np.float32(row.max())
    s = float(np.sum(np.exp(row - m).astype(np.float64)))
    return float(row[token] - m) - math.log(s)


def prompt_golden(llm, text):
    ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    llm.reset()
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)  # [n_prompt, n_vocab]
    positions = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:TOP_K]
        positions.append({
            "top1": int(order[0]),
            "margin": float(row[order[0]] - row[order[1]]),
            "top_ids": [int(i) for i in order],
            "top_logits": [float(row[i]) for i in order],
        })
    continuation, margins = [], []
    last = scores[-1]
    for _ in range(N_CONTINUE):
        order = np.argsort(-last, kind="stable")[:2]
        token = int(order[0])
        continuation.append(token)
        margins.append(float(last[order[0]] - last[order[1]]))
        llm.eval([token])
        last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return {"prompt": text, "ids": [int(i) for i in ids], "positions": positions,
            "continuation": continuation, "continuation_margins": margins}


def perplexity(llm, text, n_ctx):
    """llama-perplexity's perplexity() on llama.cpp logits."""
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true"
    # common_tokenize(ctx, text, add_special=true, parse_special=false)
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    if len(tokens) < 2 * n_ctx:
        sys.exit(f"perplexity text too short: {len(tokens)} tokens < {2 * n_ctx}")
    n_chunks = len(tokens) // n_ctx
    first = n_ctx // 2
    nll, count, running = 0.0, 0, []
    for c in range(n_chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        scores = np.array(llm.scores[:n_ctx], dtype=np.float32)
        for i in range(first, n_ctx - 1):
            nll -= log_softmax_at(scores[i], chunk[i + 1])
            count += 1
        running.append(math.exp(nll / count))
        print(f"  [{c + 1}]{running[-1]:.4f}", file=sys.stderr)
    return {"n_ctx": n_ctx, "n_tokens": len(tokens), "n_chunks": n_chunks, "n_scored": count,
            "ppl": math.exp(nll / count), "running_ppl": running}


def main():
    import llama_cpp

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?", default=os.environ.get(
        "SPUTNIK_DEMO_MODEL", os.path.expanduser("~/.cache/sputnik/models/SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--out", default=os.path.join(REPO, "tests/data/llamacpp"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    if sha256(args.model) != DEMO_MODEL_SHA256:
        sys.exit(f"{args.model}: sha256 differs from the demo model's {DEMO_MODEL_SHA256}")
    if sha256(PPL_TEXT) != PPL_TEXT_SHA256:
        sys.exit(f"{PPL_TEXT}: sha256 differs from the pinned {PPL_TEXT_SHA256}")
    os.makedirs(args.out, exist_ok=True)

    llm = llama_cpp.Llama(args.model, n_ctx=1024, n_batch=512, logits_all=True, verbose=False,
                          n_threads=args.threads, seed=0)
    goldens = []
    for i, text in enumerate(PROMPTS):
        print(f"prompt {i}: {text!r}", file=sys.stderr)
        goldens.append(prompt_golden(llm, text))
    # llama.cpp's own numerical noise: the same prompts with an f32 instead of its default f16
    # KV cache. The test holds sputnik to agreeing with llama.cpp as well as llama.cpp agrees
    # with itself under this change.
    llm_f32 = llama_cpp.Llama(args.model, n_ctx=1024, n_batch=512, logits_all=True, verbose=False,
                              n_threads=args.threads, seed=0, type_k=0, type_v=0)  # GGML_TYPE_F32
    max_diff, sum_diff, n_pos, top1_flips = 0.0, 0.0, 0, 0
    for i, text in enumerate(PROMPTS):
        other = prompt_golden(llm_f32, text)
        ref = goldens[i]
        for a, b in zip(ref["positions"], other["positions"]):
            logits_b = dict(zip(b["top_ids"], b["top_logits"]))
            d = max(abs(logits_b[t] - l) for t, l in zip(a["top_ids"], a["top_logits"]) if t in logits_b)
            max_diff, sum_diff, n_pos = max(max_diff, d), sum_diff + d, n_pos + 1
            top1_flips += a["top1"] != b["top1"]
        agree = next((k for k, (x, y) in enumerate(zip(ref["continuation"], other["continuation"]))
                      if x != y), N_CONTINUE)
        ref["f32_kv_continuation_agreement"] = agree
        print(f"  f32 KV cache: continuation agrees for {agree} tokens", file=sys.stderr)
    meta = {"llama_cpp_python": llama_cpp.__version__, "model_sha256": DEMO_MODEL_SHA256,
            "top_k": TOP_K, "n_continue": N_CONTINUE,
            "f32_kv_max_logit_diff": max_diff, "f32_kv_mean_position_max_logit_diff": sum_diff / n_pos,
            "f32_kv_top1_flips": top1_flips, "n_positions": n_pos}
    print(f"  f32 vs f16 KV cache: max top-{TOP_K} logit diff {max_diff:.4f}, mean per position "
          f"{sum_diff / n_pos:.4f}, top-1 changes at {top1_flips} of {n_pos} positions", file=sys.stderr)
    with open(os.path.join(args.out, "prompts.json"), "w") as f:
        json.dump({"meta": meta, "prompts": goldens}, f, separators=(",", ":"))
        f.write("\n")

    llm_ppl = llama_cpp.Llama(args.model, n_ctx=PPL_CTX, n_batch=PPL_CTX, logits_all=True,
                              verbose=False, n_threads=args.threads, seed=0)
    with open(PPL_TEXT, encoding="utf-8") as f:
        text = f.read()
    print(f"perplexity on {os.path.basename(PPL_TEXT)} at n_ctx={PPL_CTX}", file=sys.stderr)
    ppl = perplexity(llm_ppl, text, PPL_CTX)
    ppl.update({"text": os.path.relpath(PPL_TEXT, REPO), "text_sha256": PPL_TEXT_SHA256,
                "llama_cpp_python": llama_cpp.__version__, "model_sha256": DEMO_MODEL_SHA256})
    with open(os.path.join(args.out, "perplexity.json"), "w") as f:
        json.dump(ppl, f, indent=1)
        f.write("\n")
    print(f"llama.cpp perplexity: {ppl['ppl']:.4f} over {ppl['n_chunks']} chunks", file=sys.stderr)


if __name__ == "__main__":
    main()
