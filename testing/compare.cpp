#include "compare.h"

#include <cmath>
#include <cstring>
#include <sstream>

namespace openmla::testing {
namespace {

int anomaly_class(float v) {
  if (std::isnan(v)) return 3;
  if (std::isinf(v)) return v > 0 ? 1 : 2;
  return 0;
}

}  // namespace

CompareResult compare(const std::vector<float>& answer, const std::vector<float>& reference,
                      const Tolerance& tol) {
  CompareResult r;
  if (answer.size() != reference.size()) {
    r.ok = false;
    r.message = "size mismatch";
    return r;
  }
  double dot = 0.0, norm = 0.0, ref_norm = 0.0;
  for (std::size_t i = 0; i < answer.size(); ++i) {
    const int ca = anomaly_class(answer[i]), cr = anomaly_class(reference[i]);
    if (ca != cr) {
      std::ostringstream s;
      s << "element " << i << ": answer " << answer[i] << " vs reference " << reference[i]
        << " (inf/NaN positions differ)";
      r.ok = false;
      r.message = s.str();
      return r;
    }
    if (ca != 0) continue;
    const double a = answer[i], ref = reference[i];
    const double abs_err = std::fabs(a - ref);
    r.max_abs_err = std::fmax(r.max_abs_err, abs_err);
    if (!(abs_err < tol.abs_tol || abs_err / (std::fabs(ref) + 1e-6) < tol.rel_tol) && r.ok) {
      std::ostringstream s;
      s << "element " << i << ": answer " << a << " vs reference " << ref << " (abs err "
        << abs_err << ")";
      r.ok = false;
      r.message = s.str();
    }
    dot += a * ref;
    norm += a * a + ref * ref;
    ref_norm += ref * ref;
  }
  r.cos_diff = ref_norm < 1e-12 ? 0.0 : 1.0 - 2.0 * dot / norm;
  if (r.cos_diff > tol.cos_tol && r.ok) {
    std::ostringstream s;
    s << "cosine difference " << r.cos_diff << " > " << tol.cos_tol;
    r.ok = false;
    r.message = s.str();
  }
  return r;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace openmla::testing
