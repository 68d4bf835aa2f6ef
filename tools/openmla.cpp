// The openmla command line: info, demo, verify, bench.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli_common.h"
#include "core/thread_pool.h"
#include "dispatch/cpu_features.h"

namespace openmla::cli {

int cmd_verify(const Flags& flags);
int cmd_bench(const Flags& flags);
int cmd_demo(const Flags& flags);

namespace {

int cmd_info() {
  std::printf("openmla %s\n", version());
  std::printf("cpu features: %s\n", cpu_features_string().c_str());
  std::printf("isa: host %s, effective %s (OPENMLA_MAX_ISA caps it)\n", isa_name(host_isa()),
              isa_name(effective_isa()));
  std::printf("threads: %d\n", resolve_num_threads(0));
  std::printf("\nkernels (priority order per op):\n");
  const std::size_t n = list_kernels(nullptr, 0);
  std::vector<KernelInfo> kernels(n);
  list_kernels(kernels.data(), n);
  for (const KernelInfo& k : kernels) {
    std::printf("  %-24s isa %-7s %s\n", k.name, k.isa,
                k.runnable ? "runnable" : "not runnable here");
  }
  return 0;
}

void usage() {
  std::printf(
      "usage: openmla <command> [flags]\n"
      "  info                       version, CPU features, registered kernels\n"
      "  demo                       DeepSeek V3.2 / V4 shaped run of the best kernels, checked\n"
      "  verify [--cases N] [--seed S] [--op sparse-decode|dense-decode|sparse-prefill|indexer]\n"
      "                             every op x format x kernel against the reference\n"
      "  bench peak|sparse-decode|dense-decode|sparse-prefill|indexer [--json] [--threads T]\n"
      "        [--impl KERNEL[,KERNEL...]] (several: calls alternate, one line each)\n"
      "        [--iters N] [--warmup N] [--vs-ref] [--layers L] (L caches, call i on i mod L:\n"
      "        each call reads a cache the previous calls did not warm) and shape flags:\n"
      "        sparse-decode: --model v32|model1|bf16 --batch --seq-q --heads --topk\n"
      "                       --extra-topk --page-size --extra-page-size --cache-tokens\n"
      "                       --extra-cache-tokens --sink\n"
      "        dense-decode:  --format bf16|fp16|v32|model1 --batch --seq-q --heads --heads-kv\n"
      "                       --cache-tokens --page-size --causal --d-qk\n"
      "        sparse-prefill: --seq-q --seq-kv --heads --heads-kv --topk --d-qk --sink\n"
      "        indexer:       --model v32|v4 --batch --next-n --heads --dim 128 --tokens --topk\n"
      "                       --page-size --fused (else paged_mqa_logits + indexer_topk)\n"
      "environment: OPENMLA_VERBOSE=1|2, OPENMLA_KERNEL=name, "
      "OPENMLA_MAX_ISA=none|avx2|avx512|amx,\n"
      "             OPENMLA_NUM_THREADS=n, OPENMLA_PIN_THREADS=1\n");
}

}  // namespace
}  // namespace openmla::cli

int main(int argc, char** argv) {
  using namespace openmla::cli;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  const Flags flags(argc, argv, 2);
  if (cmd == "info") return cmd_info();
  if (cmd == "demo") return cmd_demo(flags);
  if (cmd == "verify") return cmd_verify(flags);
  if (cmd == "bench") return cmd_bench(flags);
  std::fprintf(stderr, "openmla: unknown command '%s'\n", cmd.c_str());
  usage();
  return 2;
}
