#!/usr/bin/env python3
"""sputnik vs llama.cpp on one GGUF, same threads, in one run: pp (prompt processing) and tg
(generation) tok/s, medians of several repetitions, and their ratios.

sputnik side: `sputnik bench --json` (random tokens, fresh cache, one warm-up run).
llama.cpp side: llama-cpp-python (pip install llama-cpp-python==0.3.36, built from source with
CMAKE_ARGS="-DGGML_NATIVE=ON"), driven the way llama-bench drives llama.cpp: pp feeds N random
tokens into an empty cache in one batch, tg decodes N tokens one at a time from an empty cache.

Usage: bench/compare_llamacpp.py MODEL [-t 2] [-p 512] [-n 128] [-r 3] [--sputnik build/sputnik]
"""
import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sputnik_bench(binary, model, threads, n_prompt, n_gen, reps):
    cmd = [binary, "bench", "-m", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
           "-r", str(reps), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    rows = {r["test"]: r for r in data["rows"]}
    return rows, data["machine"]


def llamacpp_bench(model, threads, n_prompt, n_gen, reps):
    import llama_cpp

    llm = llama_cpp.Llama(model, n_ctx=max(n_prompt, n_gen) + 16, n_batch=max(n_prompt, 1),
                          n_ubatch=max(n_prompt, 1), n_threads=threads, n_threads_batch=threads,
                          logits_all=False, verbose=False)
    rng = random.Random(1234)
    vocab = llm.n_vocab()
    results = {}

    def run_pp():
        tokens = [rng.randrange(vocab) for _ in range(n_prompt)]
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        return n_prompt / (time.perf_counter() - t0)

    def run_tg():
        tokens = [rng.randrange(vocab) for _ in range(n_gen)]
        llm.reset()
        t0 = time.perf_counter()
        for t in tokens:
            llm.eval([t])
        return n_gen / (time.perf_counter() - t0)

    for name, fn, n in ((f"pp{n_prompt}", run_pp, n_prompt), (f"tg{n_gen}", run_tg, n_gen)):
        if n <= 0:
            continue
        fn()  # warm-up, as llama-bench does
        samples = [fn() for _ in range(reps)]
        results[name] = {"median": statistics.median(samples), "samples": samples}
    return results, llama_cpp.__version__


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--sputnik", default=os.path.join(REPO, os.environ.get("BUILD_DIR", "build"), "sputnik"))
    args = ap.parse_args()

    ours, machine = sputnik_bench(args.sputnik, args.model, args.threads, args.n_prompt, args.n_gen,
                                  args.repetitions)
    theirs, version = llamacpp_bench(args.model, args.threads, args.n_prompt, args.n_gen,
                                     args.repetitions)
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"model: {os.path.basename(args.model)} | threads: {args.threads} | repetitions: "
          f"{args.repetitions} (medians) | sputnik {commit} (kernels {machine['kernel_isa']}) | "
          f"llama-cpp-python {version} | {platform.processor() or platform.machine()}")
    print(f"read bandwidth {machine['read_bandwidth_gbs']:.1f} GB/s, decode roofline "
          f"{machine['roofline_tg_tokens_per_second']:.1f} tok/s")
    print()
    print(f"| {'test':>6} | {'sputnik tok/s':>13} | {'llama.cpp tok/s':>15} | {'sputnik / llama.cpp':>19} |")
    print(f"|{'-' * 7}:|{'-' * 14}:|{'-' * 16}:|{'-' * 20}:|")
    for test in theirs:
        a = ours[test]["median"]
        b = theirs[test]["median"]
        print(f"| {test:>6} | {a:>13.1f} | {b:>15.1f} | {a / b:>19.2f} |")


if __name__ == "__main__":
    sys.exit(main())
