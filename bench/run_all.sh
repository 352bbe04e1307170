#!/usr/bin/env bash
# Runs bench/compare_llamacpp.py over every benchmark model (the matrix in BENCHMARKS.md) and
# appends each model's markdown table to $OUT (default bench/results-<commit>.md).
# Needs the files of bench/models.md and llama-cpp-python; takes 40-50 minutes on 2 cores.
#   bench/run_all.sh [--quick]   (--quick: the 4-layer V2-Lite files stand in for the 27-layer ones)
set -euo pipefail
cd "$(dirname "$0")/.."
models="${SPUTNIK_MODELS:-$HOME/.cache/sputnik/models}"
bin="${SPUTNIK_BIN:-build/sputnik}"
out="${OUT:-bench/results-$(git rev-parse --short HEAD).md}"
quick=0
[ "${1:-}" = "--quick" ] && quick=1

compare() {  # MODEL ARGS...
  echo "== $*" >&2
  python3 bench/compare_llamacpp.py "$@" --sputnik "$bin" | tee -a "$out"
}
# One process per thread count: llama.cpp's 2-thread figures came out 20-40% low when the same
# Python process had run a 1-thread context first (seen on 2026-11-29; cause not found).
compare_1_2() {  # MODEL ARGS...
  local model="$1"; shift
  compare "$model" -t 2 "$@"
  compare "$model" -t 1 "$@"
}

: > "$out"
compare_1_2 "$models/SmolLM2-135M-Instruct.Q4_1.gguf" -p 512 -n 128 -r 3
compare "$models/bench/SmolLM2-135M-Instruct.Q4_1-q8_0.gguf" -t 2 -p 512 -n 128 -r 3
for q in q8_0 q4_0 q4_k; do
  compare_1_2 "$models/bench/bench-r1-qwen-$q.gguf" -p 512 -n 64 -r 3
done
for q in q4_0 q4_k q8_0; do
  compare_1_2 "$models/bench/bench-v2-lite-L4-$q.gguf" -p 512 -n 64 -r 3
done
if [ "$quick" = 0 ]; then
  for q in q4_0 q4_k q8_0; do
    compare "$models/bench/bench-v2-lite-$q.gguf" -t 2 -p 512 -n 32 -r 2
  done
fi
# Long context: generation after 4096 tokens of context against after 128 (the 27-layer pair
# fills 4096 tokens of context per sputnik repetition and once for llama.cpp: ~10 minutes).
if [ "$quick" = 0 ]; then
  compare "$models/bench/bench-v2-lite-q4_0.gguf" -t 2 -p 0 -n 16 -d 128 -r 2
  compare "$models/bench/bench-v2-lite-q4_0.gguf" -t 2 -p 0 -n 16 -d 4096 -r 2
fi
compare "$models/bench/bench-v2-lite-L4-q4_0.gguf" -t 2 -p 0 -n 32 -d 128 -r 3
compare "$models/bench/bench-v2-lite-L4-q4_0.gguf" -t 2 -p 0 -n 32 -d 4096 -r 2
compare "$models/bench/bench-r1-qwen-q4_0.gguf" -t 2 -p 0 -n 32 -d 128 -r 3
compare "$models/bench/bench-r1-qwen-q4_0.gguf" -t 2 -p 0 -n 32 -d 4096 -r 2
echo "tables in $out" >&2
