"""DeepSeek V3.2 on vLLM's CPU platform through openmla's plugin; prints generated token ids.

    python examples/vllm_deepseek_v32.py              # a tiny random V3.2 written to a temp dir
    python examples/vllm_deepseek_v32.py MODEL_DIR    # a local DeepseekV32ForCausalLM checkpoint

The plugin loads by itself (entry point `vllm.general_plugins`); kv_cache_dtype "fp8_ds_mla" is
FlashMLA's 656-byte V32 record, "auto" a bf16 cache.
"""

import os
import sys
import tempfile


def main():
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache
    if len(sys.argv) > 1:
        model = sys.argv[1]
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.join(here, "..", "tests", "vllm"))
        from tiny_deepseek import write_checkpoints

        model = write_checkpoints(tempfile.mkdtemp(prefix="tiny_v32_"))[0]
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, skip_tokenizer_init=True, enforce_eager=True, dtype="bfloat16",
              kv_cache_dtype="fp8_ds_mla", max_model_len=4096, seed=0)
    outs = llm.generate([{"prompt_token_ids": [3, 17, 42, 99, 5, 8, 200, 13]}],
                        SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))
    print("generated token ids:", list(outs[0].outputs[0].token_ids))


if __name__ == "__main__":  # vLLM starts its engine in spawned processes
    main()
