#!/usr/bin/env bash
# Configures and builds sputnik in Release into ./build (or $BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
extra=()
[ "${CI:-}" = "true" ] && extra+=(-DSPUTNIK_WERROR=ON)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${extra[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"
