#!/usr/bin/env python3
"""Runs the issue-target benchmarks of BENCHMARKS.md round robin and summarises them.

    python3 bench/targets.py [--bin ./build/openmla] [--rounds 4] [--cases v32,model1,...]

Each round runs every case's `openmla bench ... --json` command once (in a fresh process, so each
run measures the machine's limits itself); the alternation spreads a noisy co-tenant over all
cases alike. Prints one line per run (case, median us, frac_of_peak, same-run peak TFLOP/s and
GB/s) and then per case the median us, the smallest us_min and every frac_of_peak.
"""
import argparse
import json
import statistics
import subprocess

T2 = ["--threads", "2", "--json"]
CASES = {
    "v32": ["sparse-decode", "--model", "v32", "--batch", "4", "--seq-q", "1", "--heads", "128",
            "--topk", "2048", "--cache-tokens", "32768", "--page-size", "64", "--iters", "20"],
    "model1": ["sparse-decode", "--model", "model1", "--batch", "4", "--seq-q", "1", "--heads",
               "64", "--topk", "128", "--page-size", "256", "--extra-topk", "512",
               "--extra-page-size", "64", "--iters", "30"],
    "dense_h128": ["dense-decode", "--format", "bf16", "--heads", "128", "--heads-kv", "1",
                   "--batch", "4", "--seq-q", "1", "--cache-tokens", "4096", "--iters", "20"],
    "dense_h16": ["dense-decode", "--format", "bf16", "--heads", "16", "--heads-kv", "1",
                  "--batch", "1", "--seq-q", "1", "--cache-tokens", "32768", "--iters", "20"],
    "prefill": ["sparse-prefill", "--seq-q", "256", "--seq-kv", "8192", "--heads", "128",
                "--topk", "2048", "--d-qk", "576", "--iters", "3"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="./build/openmla")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    names = args.cases.split(",")
    runs = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            out = subprocess.run([args.bin, "bench"] + CASES[n] + T2, capture_output=True,
                                 text=True, check=True).stdout
            for line in out.splitlines():
                d = json.loads(line)
                runs[n].append(d)
                print(f"{n:11s} us {d['us']:10.1f}  frac {d['frac_of_peak']:.3f}  "
                      f"peak {d['peak_tflops']:.2f} TFLOP/s {d['peak_gbps']:.1f} GB/s", flush=True)
    for n in names:
        r = runs[n]
        fracs = ", ".join(f"{d['frac_of_peak']:.2f}" for d in r)
        print(f"{n:11s} median us {statistics.median(d['us'] for d in r):10.1f}  "
              f"min us {min(d['us_min'] for d in r):10.1f}  frac {fracs}")


if __name__ == "__main__":
    main()
