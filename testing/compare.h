// FlashMLA's comparator (tests/kernelkit/compare.py, spec §7.1) and its tolerance table (§7.2).
// Used by `openmla verify`, the demo and the C++ tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace openmla::testing {

struct Tolerance {
  double abs_tol;
  double rel_tol;
  double cos_tol;
};

// Spec §7.2, the minimum strictness for every kernel.
constexpr Tolerance kDecodeOut{1e-3, 2.01 / 128, 5e-6};
constexpr Tolerance kDenseDecodeOut{8e-4, 2.01 / 128, 5e-6};  ///< bf16 or fp16 out
constexpr Tolerance kDecodeLse{1e-6, 8.01 / 65536, 1e-7};
constexpr Tolerance kPrefillOut{8e-4, 3.01 / 128, 7e-6};
constexpr Tolerance kPrefillLogits{1e-6, 2.01 / 65536, 1e-7};

// Stricter than the spec, for fp16 out: within one fp16 step of the reference's fp16 out. The
// fp32 kernels move the value before its one RNE rounding by far less than a step; anything
// rounded to bf16 on the way (inputs or out) misses by up to 8 steps and fails.
constexpr Tolerance kFp16OutStep{1e-6, 1.01 / 1024, 1e-7};

struct CompareResult {
  bool ok = true;
  double max_abs_err = 0.0;
  double cos_diff = 0.0;
  std::string message;  ///< why it failed (first offending element), empty when ok
};

/// 1) +inf, -inf and NaN must sit at identical positions; 2) every element passes abs < abs_tol
/// or abs / (|ref| + 1e-6) < rel_tol; 3) 1 - 2*sum(a*r)/sum(a^2+r^2) <= cos_tol.
CompareResult compare(const std::vector<float>& answer, const std::vector<float>& reference,
                      const Tolerance& tol);

/// Whether two byte ranges are identical (bitwise checks for determinism).
bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace openmla::testing
