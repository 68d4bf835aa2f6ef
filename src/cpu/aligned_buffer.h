// A 64-byte aligned, growable scratch buffer for the CPU kernels (contents are not preserved when
// it grows). Internal linkage on purpose: this header is compiled under different ISA flags, and
// an inline function shared across those translation units could be linked from an AVX-512 copy
// into an AVX2-only path.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>

namespace openmla {
namespace {

template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data_); }

  /// At least `n` elements; throws std::bad_alloc (reported as kOutOfMemory by the registry).
  T* get(int64_t n) {
    if (n > capacity_) {
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
      const std::size_t bytes = (static_cast<std::size_t>(n) * sizeof(T) + 63) / 64 * 64;
      data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (data_ == nullptr) throw std::bad_alloc();
      capacity_ = n;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  int64_t capacity_ = 0;
};

}  // namespace
}  // namespace openmla
