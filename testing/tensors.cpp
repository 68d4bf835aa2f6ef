#include "tensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"

namespace openmla::testing {

uint64_t Rng::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double Rng::uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }

int64_t Rng::below(int64_t n) { return n <= 0 ? 0 : static_cast<int64_t>(next() % n); }

float Rng::normal() {
  // Irwin-Hall with 4 uniforms, rescaled to unit variance: cheap and good enough for test data.
  const double s = uniform() + uniform() + uniform() + uniform() - 2.0;
  return static_cast<float>(s * 1.7320508075688772);
}

int64_t OwnedTensor::offset(std::initializer_list<int64_t> index) const {
  int64_t off = 0;
  int d = 0;
  for (int64_t i : index) off += i * view.stride[d++];
  return off;
}

TensorView tensor_view(const void* data, DType dtype, const std::vector<int64_t>& shape,
                       const std::vector<int64_t>& stride) {
  TensorView t;
  t.data = const_cast<void*>(data);
  t.dtype = dtype;
  t.ndim = static_cast<int32_t>(shape.size());
  int64_t contiguous = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.shape[d] = shape[d];
    t.stride[d] = stride.empty() ? contiguous : stride[d];
    contiguous *= shape[d];
  }
  return t;
}

OwnedTensor make_owned_strided(DType dtype, const std::vector<int64_t>& shape,
                               const std::vector<int64_t>& stride, int64_t storage_elements) {
  OwnedTensor t;
  const std::size_t bytes = static_cast<std::size_t>(storage_elements) * dtype_size(dtype);
  t.storage.assign(bytes / 8 + 1, 0);
  t.view.data = t.storage.data();
  t.view.dtype = dtype;
  t.view.ndim = static_cast<int32_t>(shape.size());
  for (std::size_t d = 0; d < shape.size(); ++d) {
    t.view.shape[d] = shape[d];
    t.view.stride[d] = stride[d];
  }
  return t;
}

OwnedTensor make_owned(DType dtype, const std::vector<int64_t>& shape, bool non_contiguous) {
  std::vector<int64_t> stride(shape.size());
  int64_t running = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    stride[d] = running;
    const bool last = d == static_cast<int>(shape.size()) - 1;
    running *= shape[d] + (non_contiguous ? (last ? 128 : 1) : 0);
  }
  return make_owned_strided(dtype, shape, stride, std::max<int64_t>(running, 1));
}

std::vector<float> to_float_vector(const TensorView& t) {
  std::vector<float> out;
  out.reserve(t.numel());
  std::vector<int64_t> idx(t.ndim, 0);
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int d = 0; d < t.ndim; ++d) off += idx[d] * t.stride[d];
    const uint16_t* words = static_cast<const uint16_t*>(t.data);
    const float* floats = static_cast<const float*>(t.data);
    out.push_back(t.dtype == DType::kBF16  ? bf16_to_float(words[off])
                  : t.dtype == DType::kF16 ? fp16_to_float(words[off])
                                           : floats[off]);
    for (int d = t.ndim - 1; d >= 0; --d) {
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

void fill_normal(const OwnedTensor& t, Rng& rng, float scale, float shift, float limit) {
  // Fills the whole backing store (padding included): padding is never read by a correct kernel.
  uint16_t* p = reinterpret_cast<uint16_t*>(const_cast<uint64_t*>(t.storage.data()));
  const std::size_t n = t.storage.size() * 4;
  const bool fp16 = t.view.dtype == DType::kF16;
  for (std::size_t i = 0; i < n; ++i) {
    const float x = std::clamp(rng.normal() * scale + shift, -limit, limit);
    p[i] = fp16 ? float_to_fp16(x) : float_to_bf16(x);
  }
}

void fill_sink(const OwnedTensor& t, Rng& rng) {
  for (int64_t h = 0; h < t.view.shape[0]; ++h) {
    const double u = rng.uniform();
    t.at<float>({h}) = u < 0.31 ? INFINITY : u < 0.62 ? -INFINITY : rng.normal();
  }
}

}  // namespace openmla::testing
