// The openmla command line: info, demo, verify, bench. main() builds the command tree (each
// subcommand declares its own flags) and hands argv to the parser, which checks every argument
// before anything runs.
#include <cstdio>
#include <string>

#include "cli_common.h"
#include "core/thread_pool.h"
#include "dispatch/cpu_features.h"

namespace openmla::cli {

namespace {

int run_info(const Args&) {
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

constexpr const char* kEnvironment =
    "environment:\n"
    "  OPENMLA_VERBOSE=1|2            print the chosen kernel per plan (2: every rejection)\n"
    "  OPENMLA_KERNEL=name            force a kernel (fails rather than falling back)\n"
    "  OPENMLA_MAX_ISA=none|avx2|avx512|avx512bf16|amx  cap the instruction set\n"
    "  OPENMLA_NUM_THREADS=n, OPENMLA_PIN_THREADS=1\n";

}  // namespace

void add_info(Command& root) {
  root.add_command("info", "version, CPU features, registered kernels").set_run(run_info);
}

}  // namespace openmla::cli

int main(int argc, char** argv) {
  using namespace openmla::cli;
  // Progress lines reach a pipe (tee, CI logs) as they are printed.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Command root("openmla", "FlashMLA's attention kernels (DeepSeek V3.2 and V4) on this CPU");
  root.set_epilog(kEnvironment);
  add_info(root);
  add_demo(root);
  add_verify(root);
  add_bench(root);
  return root.main(argc, argv, openmla::version());
}
