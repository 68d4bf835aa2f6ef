#include "core/check.h"

#include <cstdint>
#include <sstream>

namespace openmla {

Status invalid_argument(const std::string& message) {
  return Status(StatusCode::kInvalidArgument, message);
}
Status unsupported(const std::string& message) { return Status(StatusCode::kUnsupported, message); }

std::string shape_string(const TensorView& t) {
  std::ostringstream s;
  s << "[";
  const int shown = t.ndim < kMaxDims ? t.ndim : kMaxDims;  // never read past the shape array
  for (int i = 0; i < shown; ++i) s << (i ? ", " : "") << t.shape[i];
  if (t.ndim > kMaxDims) s << ", ...";
  s << "]";
  return s.str();
}

Status view_extent_bytes(const TensorView& t, const char* name, int64_t* bytes) {
  int64_t max_offset = 0;
  bool empty = false;
  if (t.ndim > kMaxDims) return invalid_argument(std::string(name) + ": too many dimensions");
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] == 0) empty = true;
    int64_t term;
    if (t.shape[i] > 0 && __builtin_mul_overflow(t.shape[i] - 1, t.stride[i], &term))
      return invalid_argument(std::string(name) + ": shape and strides overflow int64");
    if (t.shape[i] > 0 && __builtin_add_overflow(max_offset, term, &max_offset))
      return invalid_argument(std::string(name) + ": shape and strides overflow int64");
  }
  int64_t total;
  if (__builtin_add_overflow(max_offset, int64_t{1}, &total) ||
      __builtin_mul_overflow(total, static_cast<int64_t>(dtype_size(t.dtype)), &total))
    return invalid_argument(std::string(name) + ": byte size overflows int64");
  *bytes = empty ? 0 : total;
  return Status::Ok();
}

Status check_tensor(const TensorView& t, const char* name, std::initializer_list<DType> dtypes,
                    int ndim, bool last_contiguous) {
  const std::string n(name);
  if (!t.present()) return invalid_argument(n + ": required tensor is missing");
  if (t.device != Device::kCpu)
    return unsupported(n + ": only CPU tensors are supported by this build");
  bool dtype_ok = false;
  std::string expected;
  for (DType d : dtypes) {
    dtype_ok = dtype_ok || d == t.dtype;
    expected += (expected.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  if (!dtype_ok)
    return Status(StatusCode::kWrongDtype,
                  n + ": expected dtype " + expected + ", got " + dtype_name(t.dtype));
  if (t.ndim != ndim || ndim > kMaxDims) {
    return invalid_argument(n + ": expected " + std::to_string(ndim) + " dimensions, got " +
                            std::to_string(t.ndim) + " " + shape_string(t));
  }
  for (int i = 0; i < ndim; ++i) {
    if (t.shape[i] < 0)
      return invalid_argument(n + ": negative size in dimension " + std::to_string(i));
    if (t.stride[i] < 0)
      return invalid_argument(n + ": negative stride in dimension " + std::to_string(i));
  }
  if (last_contiguous && t.shape[ndim - 1] > 1 && t.stride[ndim - 1] != 1) {
    return invalid_argument(n + ": the last dimension must be contiguous (stride 1), got stride " +
                            std::to_string(t.stride[ndim - 1]));
  }
  int64_t bytes = 0;
  OPENMLA_RETURN_IF_ERROR(view_extent_bytes(t, name, &bytes));
  if (bytes > 0 && t.data == nullptr) return invalid_argument(n + ": data pointer is null");
  return Status::Ok();
}

Status check_dim(const TensorView& t, const char* name, int dim, int64_t expected,
                 const char* dim_name) {
  if (t.shape[dim] == expected) return Status::Ok();
  return invalid_argument(std::string(name) + ": shape[" + std::to_string(dim) + "] (" + dim_name +
                          ") must be " + std::to_string(expected) + ", got " +
                          std::to_string(t.shape[dim]) + " in " + shape_string(t));
}

Status check_lengths(const TensorView& t, const char* name, int64_t n, const char* dim_name,
                     int64_t max_value) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(t, name, {DType::kI32}, 1, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 0, n, dim_name));
  const int32_t* data = static_cast<const int32_t*>(t.data);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = data[i * t.stride[0]];
    if (v < 0 || v > max_value) {
      return invalid_argument(std::string(name) + "[" + std::to_string(i) + "] = " +
                              std::to_string(v) + " is outside [0, " + std::to_string(max_value) +
                              "]");
    }
  }
  return Status::Ok();
}

}  // namespace openmla
