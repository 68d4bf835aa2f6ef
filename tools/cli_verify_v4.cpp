// The V4 blocks in `openmla verify`. Each case is built twice from one seed, run once with the
// reference and once with the kernel (all threads), and compared (testing/v4_block_cases.h):
// mHC bf16 outputs within (|ref| + 0.05) / 128 and fp32 post / comb within 2e-5 (1 + |ref|);
// the Engram gate's outputs within (|ref| + 0.05) / 128; the compressor's BF16-cache latents
// within 2 bf16 units of the larger magnitude (head dim 128: plus 2 units of the row's largest
// value / 2, the Hadamard mix) and every slot no entry names left as it was. Shapes are small
// (vector tails, padded strides, 0 tokens, shuffled state rows and cache slots) so that 30 cases
// per kernel stay cheap under ASan.
#include "cli_verify_v4.h"

#include <algorithm>
#include <cstdio>

#include "cli_common.h"
#include "v4_block_cases.h"

namespace openmla::cli {
namespace {

template <typename T>
T pick(testing::Rng& rng, std::initializer_list<T> values) {
  return values.begin()[rng.below(static_cast<int64_t>(values.size()))];
}

template <typename Case>
Status run_with(const Case& c, const std::string& kernel) {
  Options o;
  o.kernel = kernel.c_str();
  Plan plan;
  const Status s = c.plan(o, &plan);
  return s.ok() ? c.run(plan) : s;
}

/// Every runnable kernel of `op` against "<op>.ref" on `cases` cases make(seed'); a kernel that
/// reports kUnsupported for a case is counted as skipped.
template <typename Make, typename Check>
VerifyTally verify_kernels(Op op, const char* format, int cases, uint64_t seed, Make make,
                           Check check) {
  VerifyTally total;
  const std::string reference = std::string(op_name(op)) + ".ref";
  for (const std::string& kernel : runnable_kernels(op)) {
    VerifyTally t;
    double max_err = 0.0;
    std::string first_failure, skip_reason;
    for (int i = 0; i < cases; ++i) {
      const uint64_t s = seed * 1000003 + static_cast<uint64_t>(i);
      const auto want = make(s);
      const auto got = make(s);
      const Status rs = run_with(want, reference), ks = run_with(got, kernel);
      if (ks.code() == StatusCode::kUnsupported && rs.ok()) {
        ++t.skipped;
        skip_reason = ks.message();
        continue;
      }
      std::string message = !rs.ok() ? "reference: " + rs.to_string() : ks.to_string();
      const bool ok = rs.ok() && ks.ok() && check(got, want, &max_err, &message);
      (ok ? t.passed : t.failed)++;
      if (!ok && first_failure.empty())
        first_failure = "case " + std::to_string(i) + ": " + message;
    }
    std::printf("%-15s %-7s %-22s %4d passed %3d failed  max_abs_err %.3g\n", op_name(op), format,
                kernel.c_str(), t.passed, t.failed, max_err);
    if (t.skipped > 0) std::printf("    %d skipped: %s\n", t.skipped, skip_reason.c_str());
    if (!first_failure.empty()) std::printf("    first failure: %s\n", first_failure.c_str());
    total.passed += t.passed;
    total.failed += t.failed;
    total.skipped += t.skipped;
  }
  return total;
}

testing::CompressorConfig random_compressor(uint64_t seed, int64_t head_dim) {
  testing::Rng rng(seed);
  testing::CompressorConfig c;
  c.ratio = pick<int64_t>(rng, {4, 4, 128});
  c.head_dim = head_dim;
  c.format = KvFormat::kBF16;
  c.seqs = 1 + rng.below(3);
  c.prefill = rng.uniform() < 0.5;
  c.len = c.ratio == 4 ? 1 + rng.below(25) : pick<int64_t>(rng, {1, 127, 128, 129, 200, 256});
  c.page_size = pick<int64_t>(rng, {1, 3, 64});
  c.shuffle = true;
  c.seed = seed;
  return c;
}

testing::MhcConfig random_mhc(testing::MhcStage stage, uint64_t seed) {
  testing::Rng rng(seed);
  testing::MhcConfig c;
  c.stage = stage;
  c.tokens = pick<int64_t>(rng, {0, 1, 3, 4, 17, 37});
  c.hc = pick<int64_t>(rng, {1, 2, 3, 4, 4, 4, 5});
  c.hidden = pick<int64_t>(rng, {1, 7, 64, 100, 256, 520});
  c.sinkhorn_iters = pick<int64_t>(rng, {1, 2, 5, 20, 20});
  c.padded = rng.uniform() < 0.5;
  c.seed = seed;
  return c;
}

testing::EngramGateConfig random_engram_gate(uint64_t seed) {
  testing::Rng rng(seed);
  testing::EngramGateConfig c;
  c.tokens = pick<int64_t>(rng, {0, 1, 3, 7, 19});
  c.hc = pick<int64_t>(rng, {1, 2, 3, 4, 4});
  c.hidden = pick<int64_t>(rng, {1, 33, 64, 100, 256, 300});
  c.padded = rng.uniform() < 0.5;
  c.in_place = rng.uniform() < 0.5;
  c.seed = seed;
  return c;
}

void add(VerifyTally* total, const VerifyTally& t) {
  total->passed += t.passed;
  total->failed += t.failed;
  total->skipped += t.skipped;
}

}  // namespace

VerifyTally verify_v4_block(const std::string& op, int cases, uint64_t seed) {
  VerifyTally total;
  if (op == "compressor") {
    for (int64_t dim : {512, 128})
      add(&total, verify_kernels(
                      Op::kCompressor, dim == 512 ? "bf16" : "keys128", cases, seed,
                      [dim](uint64_t s) {
                        return testing::make_compressor_case(random_compressor(s, dim));
                      },
                      testing::check_compressor));
  } else if (op == "mhc") {
    for (testing::MhcStage stage :
         {testing::MhcStage::kPre, testing::MhcStage::kPost, testing::MhcStage::kHead})
      add(&total, verify_kernels(
                      testing::mhc_op(stage), "bf16", cases, seed,
                      [stage](uint64_t s) { return testing::make_mhc_case(random_mhc(stage, s)); },
                      testing::check_mhc));
  } else if (op == "engram") {
    add(&total,
        verify_kernels(
            Op::kEngramGate, "bf16", cases, seed,
            [](uint64_t s) { return testing::make_engram_gate_case(random_engram_gate(s)); },
            testing::check_engram_gate));
  }
  return total;
}

}  // namespace openmla::cli
