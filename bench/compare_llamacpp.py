#!/usr/bin/env python3
"""sputnik vs llama.cpp on one GGUF, same threads, in one run: pp (prompt processing) and tg
(generation) tok/s, medians of several repetitions, and their ratios.

sputnik side: `sputnik bench --json -r 1` per repetition (random tokens, fresh cache, a warm-up).
Repetitions alternate between the two engines so that changing machine load hits both alike.
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


def sputnik_bench(binary, model, threads, n_prompt, n_gen):
    """One `sputnik bench` repetition (it does its own warm-up run); {test: tok/s}, machine."""
    cmd = [binary, "bench", "-m", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
           "-r", "1", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    return {r["test"]: r["mean"] for r in data["rows"]}, data["machine"]


class LlamaCppBench:
    def __init__(self, model, threads, n_prompt, n_gen):
        import llama_cpp

        self.version = llama_cpp.__version__
        self.llm = llama_cpp.Llama(model, n_ctx=max(n_prompt, n_gen) + 16, n_batch=max(n_prompt, 1),
                                   n_ubatch=max(n_prompt, 1), n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False)
        self.rng = random.Random(1234)
        self.n_prompt, self.n_gen = n_prompt, n_gen

    def pp(self):
        tokens = [self.rng.randrange(self.llm.n_vocab()) for _ in range(self.n_prompt)]
        self.llm.reset()
        t0 = time.perf_counter()
        self.llm.eval(tokens)
        return self.n_prompt / (time.perf_counter() - t0)

    def tg(self):
        tokens = [self.rng.randrange(self.llm.n_vocab()) for _ in range(self.n_gen)]
        self.llm.reset()
        t0 = time.perf_counter()
        for t in tokens:
            self.llm.eval([t])
        return self.n_gen / (time.perf_counter() - t0)

    def run(self, warm_up=False):
        """One repetition of each test (a warm-up first, as llama-bench does)."""
        out = {}
        if self.n_prompt > 0:
            if warm_up:
                self.pp()
            out[f"pp{self.n_prompt}"] = self.pp()
        if self.n_gen > 0:
            if warm_up:
                self.tg()
            out[f"tg{self.n_gen}"] = self.tg()
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--sputnik", default=os.path.join(REPO, os.environ.get("BUILD_DIR", "build"), "sputnik"))
    args = ap.parse_args()

    # Repetitions alternate between the engines, so a change in machine load hits both alike.
    llama = LlamaCppBench(args.model, args.threads, args.n_prompt, args.n_gen)
    version = llama.version
    ours, theirs = {}, {}
    for rep in range(args.repetitions):
        rates, machine = sputnik_bench(args.sputnik, args.model, args.threads, args.n_prompt,
                                       args.n_gen)
        for test, rate in rates.items():
            ours.setdefault(test, []).append(rate)
        for test, rate in llama.run(warm_up=rep == 0).items():
            theirs.setdefault(test, []).append(rate)
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
        a = statistics.median(ours[test])
        b = statistics.median(theirs[test])
        print(f"| {test:>6} | {a:>13.1f} | {b:>15.1f} | {a / b:>19.2f} |")


if __name__ == "__main__":
    sys.exit(main())
