#!/usr/bin/env python3
"""Golden data for tests/llama_model_test.cpp: tiny random-weight Llama and Qwen2 checkpoints
written by Hugging Face transformers, with the logits transformers computes for them.

For each model, under tests/data/dense/<name>/:
  config.json, model.safetensors   the checkpoint, f32 (save_pretrained)
  reference.json                   {"tokens": [...], "n_prefill": 16, "vocab_size": 256}
  reference_logits.f32             little-endian f32 [len(tokens), vocab_size]: the logits of a
                                   full forward pass over all tokens (eager attention, f32)
  reference_l_out.f32              little-endian f32 [n_layers, len(tokens), hidden_size]: the
                                   output of each decoder layer in that pass

There is no tokenizer.json: load_model loads these with a null tokenizer.

  llama: GQA (4 query heads, 2 kv heads), llama3 rope scaling with original_max_position_embeddings
         small enough that the test's positions cross all three bands, tied embeddings. Its
         config.json is rewritten in the transformers 4.x form real checkpoints use
         (top-level rope_theta + rope_scaling).
  qwen2: q/k/v biases, GQA (4 query heads, 1 kv head), untied lm_head, rope_theta 1e6; config.json
         as transformers 5 writes it (rope_parameters).

Weights are drawn wider than HF's 0.02 init, and norm weights and biases are randomised, so that
every term shows up in the logits. Run: python3 tools/gen_dense_fixtures.py
"""
import json
import os

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "dense")
N_PREFILL = 16
N_DECODE = 4
VOCAB = 256


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def build(name, model, seed):
    randomise(model, seed)
    model.eval()
    out_dir = os.path.join(ROOT, name)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for extra in ("generation_config.json",):
        path = os.path.join(out_dir, extra)
        if os.path.exists(path):
            os.remove(path)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, size=N_PREFILL + N_DECODE).tolist()
    layer_outputs = []  # the residual stream after each decoder layer (sputnik's "l_out")
    hooks = [layer.register_forward_hook(
        lambda module, args, output: layer_outputs.append(
            (output[0] if isinstance(output, tuple) else output)[0].detach().float().numpy()))
        for layer in model.model.layers]
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].float().numpy()
    for h in hooks:
        h.remove()
    assert logits.shape == (len(tokens), VOCAB)
    assert len(layer_outputs) == len(model.model.layers)
    logits.astype("<f4").tofile(os.path.join(out_dir, "reference_logits.f32"))
    np.stack(layer_outputs).astype("<f4").tofile(os.path.join(out_dir, "reference_l_out.f32"))
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump({"tokens": tokens, "n_prefill": N_PREFILL, "vocab_size": VOCAB}, f)
        f.write("\n")
    print(f"{name}: logits range [{logits.min():.3f}, {logits.max():.3f}], std {logits.std():.3f}")
    return out_dir


def rewrite_rope_as_v4(out_dir, rope_theta, rope_scaling):
    """Real Llama-3 checkpoints carry rope_theta and rope_scaling at the top level."""
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.pop("rope_parameters", None)
    config["rope_theta"] = rope_theta
    config["rope_scaling"] = rope_scaling
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    torch.manual_seed(0)
    llama3_scaling = {
        "rope_type": "llama3",
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    llama_config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters=dict(rope_theta=10000.0, **llama3_scaling),
        attn_implementation="eager", torch_dtype=torch.float32)
    llama = LlamaForCausalLM(llama_config).float()
    out = build("llama", llama, seed=1)
    rewrite_rope_as_v4(out, 10000.0, llama3_scaling)

    qwen_config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128,
        rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        attn_implementation="eager", torch_dtype=torch.float32)
    qwen = Qwen2ForCausalLM(qwen_config).float()
    build("qwen2", qwen, seed=2)


if __name__ == "__main__":
    main()
