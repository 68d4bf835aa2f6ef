// Kernel selection: the first runnable kernel wins, OPENMLA_MAX_ISA caps it, OPENMLA_KERNEL and
// Options::kernel force one (and fail rather than fall back), the reference is always last.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "cases.h"
#include "dispatch/cpu_features.h"
#include "dispatch/registry.h"

namespace {

using openmla::Isa;
using openmla::KernelEntry;
using openmla::Op;

/// Sets an environment variable for the scope of a test.
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~EnvGuard() { had_ ? setenv(name_, old_.c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

std::string planned_kernel(const openmla::Options& options, openmla::Status* status = nullptr) {
  openmla::testing::SparseDecodeConfig config;
  config.heads_q = 16;
  config.topk = 32;
  const auto c = openmla::testing::make_sparse_decode_case(config);
  auto args = c.args();
  const auto outputs = openmla::testing::bind_outputs(&args);
  openmla::Plan plan;
  const openmla::Status s = openmla::plan_sparse_decode(args, options, &plan);
  if (status) *status = s;
  return s.ok() ? plan.kernel_name() : "";
}

/// The kernel selection should pick with this ISA cap: the first listed one at or below it.
std::string first_kernel_up_to(Isa cap) {
  for (const KernelEntry* k : openmla::kernels_for(Op::kSparseDecode))
    if (k->isa <= cap) return k->name;
  return "";
}

TEST(Dispatch, ReferenceIsLastAndEveryOpHasOne) {
  std::size_t total = 0;
  for (Op op : {Op::kSparseDecode, Op::kDenseDecode, Op::kSparsePrefill, Op::kMqaLogits,
                Op::kPagedMqaLogits, Op::kPagedIndexerTopk, Op::kCompressor, Op::kMhcPre,
                Op::kMhcPost, Op::kMhcHead, Op::kEngramGate}) {
    const auto& list = openmla::kernels_for(op);
    ASSERT_FALSE(list.empty());
    total += list.size();
    EXPECT_EQ(list.back()->isa, Isa::kNone);
    EXPECT_EQ(std::string(list.back()->name), std::string(openmla::op_name(op)) + ".ref");
    for (std::size_t i = 1; i < list.size(); ++i) EXPECT_LE(list[i]->isa, list[i - 1]->isa);
  }
  EXPECT_EQ(openmla::list_kernels(nullptr, 0), total);
}

TEST(Dispatch, MaxIsaCapsTheChoice) {
  for (const char* cap : {"none", "avx2", "avx512", "avx512bf16", "amx"}) {
    EnvGuard guard("OPENMLA_MAX_ISA", cap);
    Isa parsed;
    ASSERT_TRUE(openmla::parse_isa(cap, &parsed));
    const Isa effective = std::min(parsed, openmla::host_isa());
    EXPECT_EQ(openmla::effective_isa(), effective);
    EXPECT_EQ(planned_kernel({}), first_kernel_up_to(effective)) << "cap " << cap;
  }
}

TEST(Dispatch, KernelEnvForcesAndIgnoresOtherOpsEntries) {
  {
    EnvGuard guard("OPENMLA_KERNEL", "dense_decode.ref,sparse_decode.ref");
    EXPECT_EQ(planned_kernel({}), "sparse_decode.ref");
  }
  {
    EnvGuard guard("OPENMLA_KERNEL", "dense_decode.ref");
    EXPECT_EQ(planned_kernel({}), first_kernel_up_to(openmla::effective_isa()));
  }
  {
    EnvGuard guard("OPENMLA_KERNEL", "sparse_decode.ref");
    const KernelEntry* top = openmla::kernels_for(Op::kSparseDecode).front();
    if (openmla::kernel_runnable(*top)) {
      openmla::Options options;
      options.kernel = top->name;
      EXPECT_EQ(planned_kernel(options), top->name) << "Options::kernel wins over the env";
    }
  }
}

TEST(Dispatch, ForcingAKernelAboveTheCapFailsInsteadOfFallingBack) {
  const KernelEntry* top = openmla::kernels_for(Op::kSparseDecode).front();
  if (top->isa == Isa::kNone) GTEST_SKIP() << "only the reference is registered";
  EnvGuard guard("OPENMLA_MAX_ISA", "none");
  openmla::Options options;
  options.kernel = top->name;
  openmla::Status status;
  EXPECT_EQ(planned_kernel(options, &status), "");
  EXPECT_EQ(status.code(), openmla::StatusCode::kUnsupported);
  EXPECT_NE(status.message().find("needs"), std::string::npos) << status.message();
}

TEST(Dispatch, ParseIsaAcceptsTheLadderOnly) {
  Isa isa;
  EXPECT_TRUE(openmla::parse_isa("ref", &isa));
  EXPECT_EQ(isa, Isa::kNone);
  EXPECT_TRUE(openmla::parse_isa("avx512", &isa));
  EXPECT_EQ(isa, Isa::kAvx512);
  EXPECT_TRUE(openmla::parse_isa("avx512bf16", &isa));
  EXPECT_EQ(isa, Isa::kAvx512Bf16);
  EXPECT_FALSE(openmla::parse_isa("sse2", &isa));
  EXPECT_FALSE(openmla::parse_isa("avx512_bf16", &isa));
  EXPECT_FALSE(openmla::parse_isa("", &isa));
}

TEST(Dispatch, LadderOrderAndNamesRoundTrip) {
  const Isa ladder[] = {Isa::kNone, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16, Isa::kAmx};
  for (std::size_t i = 0; i < 5; ++i) {
    Isa parsed;
    ASSERT_TRUE(openmla::parse_isa(openmla::isa_name(ladder[i]), &parsed));
    EXPECT_EQ(parsed, ladder[i]);
    if (i > 0) {
      EXPECT_LT(ladder[i - 1], ladder[i]);
    }
  }
}

TEST(Dispatch, Avx512CapKeepsTheAvx512KernelsAndDropsTheBf16Level) {
  if (openmla::host_isa() < Isa::kAvx512Bf16) GTEST_SKIP() << "host has no AVX512-BF16";
  EnvGuard guard("OPENMLA_MAX_ISA", "avx512");
  EXPECT_EQ(openmla::effective_isa(), Isa::kAvx512);
  EXPECT_EQ(planned_kernel({}), first_kernel_up_to(Isa::kAvx512));
}

// The indexer ops take any problem on their vector kernels, so the ISA alone decides: the BF16-dot
// kernels on a BF16 host, the fp32 AVX-512 ones under OPENMLA_MAX_ISA=avx512.
TEST(Dispatch, IndexerOpsPickTheBf16KernelsUnlessCappedAtAvx512) {
  if (openmla::host_isa() < Isa::kAvx512Bf16) GTEST_SKIP() << "host has no AVX512-BF16";
  for (Op op : {Op::kMqaLogits, Op::kPagedMqaLogits, Op::kPagedIndexerTopk}) {
    const std::string name = openmla::op_name(op);
    const KernelEntry* chosen = nullptr;
    {
      EnvGuard guard("OPENMLA_MAX_ISA", "avx512bf16");
      ASSERT_TRUE(openmla::select_kernel(op, nullptr, {}, &chosen).ok());
      EXPECT_EQ(std::string(chosen->name), name + ".avx512bf16");
    }
    EnvGuard guard("OPENMLA_MAX_ISA", "avx512");
    ASSERT_TRUE(openmla::select_kernel(op, nullptr, {}, &chosen).ok());
    EXPECT_EQ(std::string(chosen->name), name + ".avx512");
  }
}

/// The flags line of /proc/cpuinfo ("" where it cannot be read).
std::string proc_cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) return line.substr(line.find(':') + 1) + " ";
  return "";
}

TEST(Dispatch, Bf16AndVnniDetectionAgreesWithTheKernel) {
  const std::string flags = proc_cpu_flags();
  if (flags.empty()) GTEST_SKIP() << "/proc/cpuinfo not readable";
  const openmla::CpuFeatures& f = openmla::cpu_features();
  EXPECT_EQ(f.avx512_bf16, flags.find(" avx512_bf16 ") != std::string::npos);
  EXPECT_EQ(f.avx512_vnni, flags.find(" avx512_vnni ") != std::string::npos);
  EXPECT_EQ(f.avx2, flags.find(" avx2 ") != std::string::npos);
  const std::string shown = openmla::describe_cpu_features() + " ";
  EXPECT_EQ(shown.find("avx512_vnni ") != std::string::npos, f.avx512_vnni) << shown;
  EXPECT_EQ(shown.find("avx512_bf16 ") != std::string::npos, f.avx512_bf16) << shown;
  if (openmla::host_isa() >= Isa::kAvx512) {
    EXPECT_EQ(openmla::host_isa() >= Isa::kAvx512Bf16, f.avx512_bf16);
  }
}

}  // namespace
