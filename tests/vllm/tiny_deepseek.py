"""A tiny DeepSeek V3.2 checkpoint (and its dense DeepSeek V3 twin) for vLLM end-to-end tests.

Written with fixed-seed random weights (no download): `write_checkpoints(root)` makes
root/v32 (DeepseekV32ForCausalLM, lightning indexer included) and root/v3 (DeepseekV3ForCausalLM,
the same weights without the indexer). While a context is shorter than index_topk the indexer
selects every earlier token, so both models compute the same function.

Weights are drawn N(0, 1/fan_in) (embeddings N(0, 1), norms 1 + N(0, 0.1)) rather than vLLM's
dummy U(-1e-3, 1e-3), which gives near-uniform attention and logits; vLLM's dummy loader also
seeds every tensor with the same seed, so same-shaped matrices would be equal.
"""

import json
import os

import torch

CONFIG = dict(
    vocab_size=256, hidden_size=256, intermediate_size=512, moe_intermediate_size=128,
    num_hidden_layers=2, num_attention_heads=16, num_key_value_heads=16, q_lora_rank=128,
    kv_lora_rank=512, qk_nope_head_dim=64, qk_rope_head_dim=64, v_head_dim=64,
    n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=2,
    n_group=1, topk_group=1, routed_scaling_factor=1.0, norm_topk_prob=True,
    hidden_act="silu", rms_norm_eps=1e-6, max_position_embeddings=4096,
    rope_theta=10000.0, rope_scaling=None, tie_word_embeddings=False, attention_bias=False,
    bos_token_id=0, eos_token_id=1, torch_dtype="bfloat16",
    index_n_heads=4, index_head_dim=128, index_topk=2048,
)
INDEXER_KEYS = ("index_n_heads", "index_head_dim", "index_topk")


def _shapes(c):
    d, h = c["hidden_size"], c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], d),
              "lm_head.weight": (c["vocab_size"], d), "model.norm.weight": (d,)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
            a + "q_a_proj.weight": (c["q_lora_rank"], d),
            a + "q_a_layernorm.weight": (c["q_lora_rank"],),
            a + "q_b_proj.weight": (h * qk, c["q_lora_rank"]),
            a + "kv_a_proj_with_mqa.weight": (c["kv_lora_rank"] + c["qk_rope_head_dim"], d),
            a + "kv_a_layernorm.weight": (c["kv_lora_rank"],),
            a + "kv_b_proj.weight": (h * (c["qk_nope_head_dim"] + c["v_head_dim"]),
                                     c["kv_lora_rank"]),
            a + "o_proj.weight": (d, h * c["v_head_dim"]),
            a + "indexer.wq_b.weight": (c["index_n_heads"] * c["index_head_dim"],
                                        c["q_lora_rank"]),
            a + "indexer.wk.weight": (c["index_head_dim"], d),
            a + "indexer.k_norm.weight": (c["index_head_dim"],),
            a + "indexer.k_norm.bias": (c["index_head_dim"],),
            a + "indexer.weights_proj.weight": (c["index_n_heads"], d),
            p + "mlp.gate_proj.weight": (c["intermediate_size"], d),
            p + "mlp.up_proj.weight": (c["intermediate_size"], d),
            p + "mlp.down_proj.weight": (d, c["intermediate_size"]),
        })
    return shapes


def make_weights(config=CONFIG, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in _shapes(config).items():
        if name.endswith("norm.bias"):
            w = 0.1 * torch.randn(shape, generator=gen)
        elif "norm" in name:
            w = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif "embed_tokens" in name:
            w = torch.randn(shape, generator=gen)
        else:
            w = torch.randn(shape, generator=gen) / shape[1] ** 0.5
        weights[name] = w.to(torch.bfloat16)
    return weights


def write_checkpoints(root, config=CONFIG, seed=0):
    """Returns (v32_dir, v3_dir)."""
    from safetensors.torch import save_file

    weights = make_weights(config, seed)
    v32, v3 = os.path.join(root, "v32"), os.path.join(root, "v3")
    for path, arch, model_type, sparse in ((v32, "DeepseekV32ForCausalLM", "deepseek_v32", True),
                                           (v3, "DeepseekV3ForCausalLM", "deepseek_v3", False)):
        os.makedirs(path, exist_ok=True)
        cfg = dict(config, architectures=[arch], model_type=model_type)
        if not sparse:
            for key in INDEXER_KEYS:
                cfg.pop(key)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        tensors = {k: v for k, v in weights.items() if sparse or ".indexer." not in k}
        save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return v32, v3
