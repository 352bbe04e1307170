#!/usr/bin/env bash
# Second README command: builds and runs the whole test suite (CTest + GoogleTest).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
export SPUTNIK_DEMO_MODEL="$(tools/fetch_demo_model.sh)"
export SPUTNIK_DEEPSEEK_TOKENIZER="$(tools/fetch_tokenizers.sh deepseek)"
export SPUTNIK_DEEPSEEK_LLM_TOKENIZER="$(tools/fetch_tokenizers.sh deepseek-llm)"
export SPUTNIK_QWEN2_TOKENIZER="$(tools/fetch_tokenizers.sh qwen2)"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j"$(nproc)" "$@"
