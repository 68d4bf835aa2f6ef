// The two versions of the combine's element loops (cpu/combine_loops.h) must give the same bits:
// the rounding over a stride through every fp32 bit pattern plus hand-picked edges (NaN payloads
// and signs, infinities, subnormals, bf16 / fp16 ties, the fp16 overflow threshold), and the
// multiply / add over random values whose fused version would differ. Tails (n % 16 != 0) too.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "cpu/combine_loops.h"
#include "dispatch/cpu_features.h"

namespace {

using namespace openmla;

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

std::vector<float> edge_values() {
  std::vector<float> v;
  const uint32_t bits[] = {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u,
                           0xFFC00000u, 0x7F800001u, 0xFF812345u, 0x7FBFFFFFu, 0x00000001u,
                           0x807FFFFFu, 0x00400000u, 0x3F808000u, 0x3F818000u, 0x3F80FFFFu,
                           0x477FEFFFu, 0x477FF000u, 0xC77FF000u, 0x38800000u, 0x387FFFFFu,
                           0x33000000u, 0x33000001u, 0x32FFFFFFu, 0x7F7FFFFFu, 0xFF7FFFFFu};
  for (uint32_t b : bits) v.push_back(from_bits(b));
  return v;
}

void expect_same_rounding(const std::vector<float>& x, DType dtype) {
  std::vector<uint16_t> a(x.size()), b(x.size());
  combine_loops_portable().round(x.data(), static_cast<int64_t>(x.size()), dtype, a.data());
  combine_loops_avx512().round(x.data(), static_cast<int64_t>(x.size()), dtype, b.data());
  for (size_t i = 0; i < x.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &x[i], sizeof u);
    ASSERT_EQ(a[i], b[i]) << "input bits 0x" << std::hex << u;
  }
}

class CombineLoopsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (host_isa() < Isa::kAvx512) GTEST_SKIP() << "host has no AVX-512";
  }
};

TEST_F(CombineLoopsTest, RoundingMatchesOnEdgesAndAStrideThroughAllFloats) {
  std::vector<float> x = edge_values();
  for (uint64_t u = 0; u <= 0xFFFFFFFFull; u += 65521)
    x.push_back(from_bits(static_cast<uint32_t>(u)));
  for (DType dtype : {DType::kBF16, DType::kF16}) expect_same_rounding(x, dtype);
  // The portable loop is the scalar conversion itself.
  std::vector<uint16_t> out(x.size());
  combine_loops_portable().round(x.data(), static_cast<int64_t>(x.size()), DType::kBF16,
                                 out.data());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(out[i], float_to_bf16(x[i]));
}

TEST_F(CombineLoopsTest, TailsLeaveTheRestUntouched) {
  for (int64_t n : {1, 15, 17, 33}) {
    std::vector<float> x(n, 1.5f), acc(48, -7.0f);
    std::vector<uint16_t> out(48, 0xABCD);
    combine_loops_avx512().scale(2.0f, x.data(), n, acc.data());
    combine_loops_avx512().round(acc.data(), n, DType::kBF16, out.data());
    for (int64_t i = 0; i < 48; ++i) {
      EXPECT_EQ(acc[i], i < n ? 3.0f : -7.0f) << "n " << n << " i " << i;
      EXPECT_EQ(out[i], i < n ? float_to_bf16(3.0f) : 0xABCD) << "n " << n << " i " << i;
    }
  }
}

TEST_F(CombineLoopsTest, WeightedSumIsMultiplyThenAddNeverFused) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int64_t n = 509;
  std::vector<float> o0(n), o1(n), o2(n);
  for (auto* v : {&o0, &o1, &o2})
    for (float& f : *v) f = dist(rng);
  const float w0 = 0.3333333f, w1 = 0.7071068f, w2 = 1e-3f;
  std::vector<float> a(n), b(n);
  for (const CombineLoops* loops : {&combine_loops_portable(), &combine_loops_avx512()}) {
    std::vector<float>& acc = loops == &combine_loops_portable() ? a : b;
    loops->scale(w0, o0.data(), n, acc.data());
    loops->add_scaled(w1, o1.data(), n, acc.data());
    loops->add_scaled(w2, o2.data(), n, acc.data());
  }
  int64_t fused_differs = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(a[i], b[i]) << "i " << i;
    volatile float prod = w1 * o1[i];
    const float unfused = w0 * o0[i] + prod;
    fused_differs += unfused != std::fma(w1, o1[i], w0 * o0[i]);
  }
  EXPECT_GT(fused_differs, 0) << "the inputs never tell fused from unfused";
}

}  // namespace
