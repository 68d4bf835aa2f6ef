// Argument validation shared by every op: each helper returns a Status whose message names the
// argument, the dimension and what was expected. Validation lives here and in each op's API
// file; kernels assume validated parameters.
#pragma once

#include <initializer_list>
#include <string>

#include "openmla/core.h"

#define OPENMLA_RETURN_IF_ERROR(expr)      \
  do {                                     \
    ::openmla::Status _status = (expr);    \
    if (!_status.ok()) return _status;     \
  } while (0)

namespace openmla {

Status invalid_argument(const std::string& message);
Status unsupported(const std::string& message);

/// Checks presence, device (CPU), dtype, rank, non-negative shape and strides, a non-null pointer
/// when the tensor has elements, a unit last stride when `last_contiguous`, and that the byte
/// extent of the view fits in int64.
Status check_tensor(const TensorView& t, const char* name, std::initializer_list<DType> dtypes,
                    int ndim, bool last_contiguous = true);

/// `t.shape[dim] == expected`, naming the dimension (e.g. "heads_q") in the message.
Status check_dim(const TensorView& t, const char* name, int dim, int64_t expected,
                 const char* dim_name);

/// Byte extent of a view: (max element offset + 1) * element size, or an error on overflow.
Status view_extent_bytes(const TensorView& t, const char* name, int64_t* bytes);

/// Checks a [n] int32 tensor of lengths (`dim_name` names n): each value in [0, max_value].
Status check_lengths(const TensorView& t, const char* name, int64_t n, const char* dim_name,
                     int64_t max_value);

/// "[4, 1, 128, 576]".
std::string shape_string(const TensorView& t);

}  // namespace openmla
