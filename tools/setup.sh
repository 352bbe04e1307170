#!/usr/bin/env bash
# First README command: installs what is needed, builds, fetches the demo model and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
model=$(tools/fetch_demo_model.sh)
./build/sputnik run -m "$model" -p "The capital of France is" -n 32
