"""Runs greedy generation with vllm.LLM on CPU in its own process and prints one line
`RESULT {"tokens": [[...], ...], "logprobs": [[[token, logprob], ...], ...]}`.

    python run_llm.py '{"model": DIR, "prompts": [[ids...], ...], "max_tokens": 8,
                        "llm": {"kv_cache_dtype": "fp8_ds_mla", ...}}'
"""

import json
import os
import sys


def main():
    args = json.loads(sys.argv[1])
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # The engine core in this process: requests reach the scheduler in one fixed order, so every
    # run batches the same steps (with a separate engine-core process the second prompt's prefill
    # sometimes joined the first's first decode step, and that step's logprob then moved by ~0.17,
    # identically in vLLM's own dense backend: the batching, not the attention backend).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    llm = LLM(model=args["model"], skip_tokenizer_init=True, enforce_eager=True,
              load_format="safetensors", dtype="bfloat16", seed=0,
              max_model_len=args.get("max_model_len", 4096), max_num_seqs=4,
              **args.get("llm", {}))
    params = SamplingParams(temperature=0.0, max_tokens=args.get("max_tokens", 8), logprobs=2,
                            ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in args["prompts"]], params)
    result = {"tokens": [], "logprobs": []}
    for out in outs:
        completion = out.outputs[0]
        result["tokens"].append(list(completion.token_ids))
        steps = []
        for step in completion.logprobs:
            ranked = sorted(step.items(), key=lambda kv: kv[1].rank)
            steps.append([[tok, lp.logprob] for tok, lp in ranked])
        result["logprobs"].append(steps)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
