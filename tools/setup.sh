#!/usr/bin/env bash
# First README command: installs what is needed, builds Release, fetches the demo model
# (SmolLM2-135M-Instruct, Q4_1 GGUF) and runs one generation with it.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
tools/install_deps.sh
BUILD_DIR="$build" tools/build.sh
model=$(tools/fetch_demo_model.sh)
echo "demo model: $model" >&2
"$build/sputnik" run -m "$model" -p "The capital of France is" -n 32 --temp 0
