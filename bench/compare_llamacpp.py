#!/usr/bin/env python3
"""sputnik vs llama.cpp on one GGUF, same threads, in one run: pp (prompt processing) and tg
(generation) tok/s, medians of several repetitions, their ratios, the share of the decode
roofline each engine reaches, the 2-thread / 1-thread generation speed-up, and peak memory.
Prints a markdown table ready for BENCHMARKS.md.

sputnik side: `sputnik bench --json -r 1` per repetition (random tokens, a warm-up run, the
depth context filled untimed). Repetitions alternate between the two engines so that changing
machine load hits both alike. llama.cpp side: llama-cpp-python (pip install
llama-cpp-python==0.3.36, built from source with CMAKE_ARGS="-DGGML_NATIVE=ON"), driven the way
llama-bench drives llama.cpp: the depth context (-d N random tokens) is evaluated once, untimed;
pp then feeds N random tokens after it in one batch, tg decodes N tokens one at a time after it.

The roofline is sputnik's measured read bandwidth at that thread count divided by the bytes a
generated token reads (active weights + cached K/V), the same figure for both engines.

Usage: bench/compare_llamacpp.py MODEL [-t 1,2] [-p 512] [-n 128] [-d 0] [-r 3]
                                 [--sputnik build/sputnik] [--one-at-a-time]
"""
import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_names(n_prompt, n_gen, depth):
    """The test names both engines report, as `sputnik bench` spells them (pp512, tg64@d4096)."""
    suffix = f"@d{depth}" if depth > 0 else ""
    return (f"pp{n_prompt}{suffix}" if n_prompt > 0 else None,
            f"tg{n_gen}{suffix}" if n_gen > 0 else None)


def sputnik_bench(binary, model, threads, n_prompt, n_gen, depth):
    """One `sputnik bench` repetition (it does its own warm-up run); {test: tok/s}, its JSON."""
    cmd = [binary, "bench", "-m", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
           "-d", str(depth), "-r", "1", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    return {r["test"]: r["mean"] for r in data["rows"]}, data


class LlamaCppBench:
    def __init__(self, model, threads, n_prompt, n_gen, depth):
        import llama_cpp

        self.version = llama_cpp.__version__
        # The pp prompt goes in one batch; so does the depth context, 512 tokens at a time
        # (llama-bench's n_ubatch), not token by token.
        n_batch = max(n_prompt, 512)
        self.llm = llama_cpp.Llama(model, n_ctx=depth + max(n_prompt, n_gen) + 16, n_batch=n_batch,
                                   n_ubatch=n_batch, n_threads=threads, n_threads_batch=threads,
                                   logits_all=False, verbose=False)
        self.rng = random.Random(1234)
        self.n_prompt, self.n_gen, self.depth = n_prompt, n_gen, depth
        self.pp_name, self.tg_name = test_names(n_prompt, n_gen, depth)
        # The depth context, evaluated once; each run cuts the cache back to it (eval removes
        # cached positions from n_tokens on).
        self.llm.reset()
        if depth > 0:
            self.llm.eval(self.random_tokens(depth))

    def random_tokens(self, n):
        return [self.rng.randrange(self.llm.n_vocab()) for _ in range(n)]

    def pp(self):
        tokens = self.random_tokens(self.n_prompt)
        self.llm.n_tokens = self.depth
        t0 = time.perf_counter()
        self.llm.eval(tokens)
        return self.n_prompt / (time.perf_counter() - t0)

    def tg(self):
        tokens = self.random_tokens(self.n_gen)
        self.llm.n_tokens = self.depth
        t0 = time.perf_counter()
        for t in tokens:
            self.llm.eval([t])
        return self.n_gen / (time.perf_counter() - t0)

    def run(self, warm_up=False):
        """One repetition of each test (a warm-up first, as llama-bench does)."""
        out = {}
        if self.pp_name:
            if warm_up:
                self.pp()
            out[self.pp_name] = self.pp()
        if self.tg_name:
            if warm_up:
                self.tg()
            out[self.tg_name] = self.tg()
        return out


def total_memory_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def mib(n):
    return n / 1048576


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", default=str(os.cpu_count()),
                    help="thread counts, comma separated (e.g. 1,2)")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-d", "--n-depth", type=int, default=0,
                    help="tokens already in the cache (random, untimed) before each pp and tg run")
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--sputnik", default=os.path.join(REPO, os.environ.get("BUILD_DIR", "build"), "sputnik"))
    ap.add_argument("--one-at-a-time", action="store_true",
                    help="run llama.cpp's repetitions, free it, then sputnik's (default when the file "
                         "exceeds 40%% of RAM: both engines' copies would not fit together)")
    args = ap.parse_args()
    try:
        thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"-t: expected comma-separated thread counts, got {args.threads!r}")
    if any(t < 1 for t in thread_counts) or min(args.n_prompt, args.n_gen, args.n_depth) < 0 \
            or args.repetitions < 1:
        ap.error("thread counts and repetitions must be positive; -p, -n, -d non-negative")
    if not os.path.isfile(args.model):
        ap.error(f"no such model file: {args.model}")

    one_at_a_time = args.one_at_a_time or os.path.getsize(args.model) > 0.4 * total_memory_bytes()
    ours, theirs, machine_by_threads = {}, {}, {}  # (threads, test) -> [tok/s]; threads -> JSON
    sputnik_memory = None
    version = None

    def run_sputnik(threads):
        nonlocal sputnik_memory
        rates, data = sputnik_bench(args.sputnik, args.model, threads, args.n_prompt, args.n_gen,
                                    args.n_depth)
        best = machine_by_threads.get(threads)  # the best bandwidth probe of the repetitions
        if best is None or data["machine"]["read_bandwidth_gbs"] > best["read_bandwidth_gbs"]:
            machine_by_threads[threads] = data["machine"]
        sputnik_memory = data["memory"]
        for test, rate in rates.items():
            ours.setdefault((threads, test), []).append(rate)

    for threads in thread_counts:
        llama = LlamaCppBench(args.model, threads, args.n_prompt, args.n_gen, args.n_depth)
        version = llama.version
        for rep in range(args.repetitions):
            # Alternating repetitions let a change in machine load hit both engines alike.
            if not one_at_a_time:
                run_sputnik(threads)
            for test, rate in llama.run(warm_up=rep == 0).items():
                theirs.setdefault((threads, test), []).append(rate)
        del llama
        gc.collect()
        if one_at_a_time:
            for _ in range(args.repetitions):
                run_sputnik(threads)
    llama_peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    any_machine = next(iter(machine_by_threads.values()))
    print(f"model: {os.path.basename(args.model)} | threads: {args.threads} | depth: {args.n_depth} | "
          f"repetitions: {args.repetitions} (medians; engines "
          f"{'one after the other' if one_at_a_time else 'alternating'}) | sputnik {os.path.relpath(args.sputnik, REPO)} "
          f"(repo at {commit}, kernels {any_machine['kernel_isa']}) | llama-cpp-python {version} | "
          f"{platform.processor() or platform.machine()}")
    bytes_per_token = any_machine["tg_bytes_per_token"]
    bandwidth = {t: m["read_bandwidth_gbs"] * 1e9 for t, m in machine_by_threads.items()}
    print("read bandwidth " + ", ".join(f"{bandwidth[t] / 1e9:.1f} GB/s ({t} thr)" for t in thread_counts)
          + f"; a generated token reads {mib(bytes_per_token):.1f} MiB (active weights + K/V), so "
          "the decode roofline is " + ", ".join(f"{bandwidth[t] / bytes_per_token:.1f} tok/s ({t} thr)"
                                                 for t in thread_counts))
    print()
    print("| model | threads | test | sputnik t/s | llama.cpp t/s | sputnik / llama.cpp "
          "| sputnik % roofline | llama.cpp % roofline |")
    print("|---|--:|---|--:|--:|--:|--:|--:|")
    model_name = os.path.basename(args.model)
    medians_ours, medians_theirs = {}, {}
    for (threads, test) in theirs:
        a = medians_ours[(threads, test)] = statistics.median(ours[(threads, test)])
        b = medians_theirs[(threads, test)] = statistics.median(theirs[(threads, test)])
        roofline = bandwidth[threads] / bytes_per_token
        ours_share, theirs_share = ("", "") if test.startswith("pp") else \
            (f"{100 * a / roofline:.0f}%", f"{100 * b / roofline:.0f}%")
        print(f"| {model_name} | {threads} | {test} | {a:.1f} | {b:.1f} | {a / b:.2f} | "
              f"{ours_share} | {theirs_share} |")
    print()
    _, tg_name = test_names(args.n_prompt, args.n_gen, args.n_depth)
    if tg_name and 1 in thread_counts and 2 in thread_counts:
        print(f"{tg_name} speed-up, 2 threads / 1 thread: sputnik "
              f"{medians_ours[(2, tg_name)] / medians_ours[(1, tg_name)]:.2f}x, llama.cpp "
              f"{medians_theirs[(2, tg_name)] / medians_theirs[(1, tg_name)]:.2f}x")
    m = sputnik_memory
    needed = m["weight_bytes"] + m["kv_cache_bytes"]
    print(f"peak resident memory: sputnik {mib(m['peak_rss_bytes']):.0f} MiB = "
          f"{m['peak_rss_over_needed']:.2f} x (mapped weights {mib(m['weight_bytes']):.0f} MiB + "
          f"KV cache {mib(m['kv_cache_bytes']):.0f} MiB = {mib(needed):.0f} MiB); llama.cpp "
          f"{mib(llama_peak_rss):.0f} MiB (whole Python process, its KV cache and compute buffers)")


if __name__ == "__main__":
    sys.exit(main())
