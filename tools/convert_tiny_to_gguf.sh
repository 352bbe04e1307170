#!/usr/bin/env bash
# Converts a tiny fixture (default tests/data/deepseek/v2_lite, f32 safetensors) to GGUF
# with llama.cpp's own converter, so our GGUF loader is tested on a file llama.cpp wrote,
# and the GGUF path can be compared with the safetensors path on the same weights.
#
#   tools/convert_tiny_to_gguf.sh LLAMA_CPP_DIR [FIXTURE [OUT]]
#
# FIXTURE: v2_lite (default; its output is committed as tests/data/deepseek/v2_lite.gguf),
# or v2, v3, v3_fp8 for cross-checks (the converter dequantises FP8 itself).
#
# LLAMA_CPP_DIR: a llama.cpp source tree holding convert_hf_to_gguf.py, conversion/ and
# gguf-py/, e.g. from the llama-cpp-python sdist (not committed here):
#   pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
#   tar xzf llama_cpp_python-0.3.36.tar.gz   # -> llama_cpp_python-0.3.36/vendor/llama.cpp
#
# The one shim: the converter identifies a BPE pre-tokenizer by hashing how the model's
# tokenizer splits a probe string and refuses hashes it does not know. The fixture's
# tokenizer (one token per byte, no merges) is no real model's, so we name it
# "deepseek-llm", the pre-tokenizer llama.cpp uses for DeepSeek-V2-Lite. Weights and
# hyperparameters go through the converter unchanged.
set -euo pipefail
llama_dir=${1:?usage: $0 LLAMA_CPP_DIR [FIXTURE [OUT]]}
fixture=${2:-v2_lite}
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../tests/data/deepseek/$fixture"
out=${3:-$here/../tests/data/deepseek/$fixture.gguf}

LLAMA_DIR="$llama_dir" SRC="$src" OUT="$out" python3 - <<'EOF'
import os, runpy, sys
llama = os.path.abspath(os.environ["LLAMA_DIR"])
sys.path.insert(0, llama)
sys.path.insert(1, os.path.join(llama, "gguf-py"))
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "deepseek-llm"
sys.argv = ["convert_hf_to_gguf.py", os.environ["SRC"], "--outtype", "f32",
            "--outfile", os.environ["OUT"]]
runpy.run_path(os.path.join(llama, "convert_hf_to_gguf.py"), run_name="__main__")
EOF
