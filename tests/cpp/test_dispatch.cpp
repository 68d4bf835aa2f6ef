// Kernel selection: the first runnable kernel wins, OPENMLA_MAX_ISA caps it, OPENMLA_KERNEL and
// Options::kernel force one (and fail rather than fall back), the reference is always last.
#include <gtest/gtest.h>

#include <cstdlib>
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
    total += list.size();
    ASSERT_FALSE(list.empty());
    total += list.size();
    EXPECT_EQ(list.back()->isa, Isa::kNone);
    EXPECT_EQ(std::string(list.back()->name), std::string(openmla::op_name(op)) + ".ref");
    for (std::size_t i = 1; i < list.size(); ++i) EXPECT_LE(list[i]->isa, list[i - 1]->isa);
  }
  EXPECT_EQ(openmla::list_kernels(nullptr, 0), total);
}

TEST(Dispatch, MaxIsaCapsTheChoice) {
  for (const char* cap : {"none", "avx2", "avx512", "amx"}) {
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
  EXPECT_FALSE(openmla::parse_isa("sse2", &isa));
  EXPECT_FALSE(openmla::parse_isa("", &isa));
}

}  // namespace
