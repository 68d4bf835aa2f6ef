// openmla public API: status, tensors, options and the kernel inventory.
//
// Every entry point takes TensorViews (a pointer plus dtype, device, shape and strides counted in
// elements) and returns a Status. Nothing in the library aborts or throws across this boundary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace openmla {

/// Library version, e.g. "0.1.0".
const char* version();

enum class StatusCode : int32_t {
  kOk = 0,
  kInvalidArgument = 1,  ///< a shape, stride, value or pointer is wrong; the message names it
  kUnsupported = 2,      ///< valid request this build or machine cannot serve (dtype, dim, ISA)
  kOutOfMemory = 3,
  kInternal = 4,
  kWrongDtype = 5,  ///< a tensor has the wrong dtype (Python: TypeError); message names it
};

/// Result of every call. `message()` names the offending argument when `code() != kOk`.
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "ok" or "<code name>: <message>".
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

const char* status_code_name(StatusCode code);

enum class DType : int32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kI32 = 3,
  kI64 = 4,
  kU8 = 5,    ///< raw bytes (FP8 caches may be passed as uint8)
  kI8 = 6,    ///< raw bytes as well
  kE4M3 = 7,  ///< float8_e4m3fn
};

/// Size of one element in bytes.
std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

enum class Device : int32_t { kCpu = 0, kCuda = 1 };

constexpr int kMaxDims = 6;

/// A non-owning view of a strided tensor. Strides are in elements, may be any non-negative
/// value (0 allowed for size-1 dimensions). `ndim == 0` marks an absent optional tensor.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int32_t ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};

  bool present() const { return ndim > 0; }
  int64_t numel() const;
};

/// Builds a row-major contiguous view.
TensorView make_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                       Device device = Device::kCpu);
/// Builds a view with explicit strides (in elements).
TensorView make_strided_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                               std::initializer_list<int64_t> stride, Device device = Device::kCpu);

/// KV-cache byte formats (see README "Formats").
enum class KvFormat : int32_t {
  kBF16 = 0,    ///< plain 16-bit latents, [num_blocks, page_size, heads_kv, head_dim]: bf16
                ///< (dense decode: bf16 or fp16, the dtype of q)
  kV32 = 1,     ///< DeepSeek V3.2: 656 bytes per token (512 e4m3, 4 fp32 scales, 64 bf16 RoPE)
  kModel1 = 2,  ///< DeepSeek V4: per page 576-byte records then 8-byte ue8m0 scale records
};
const char* kv_format_name(KvFormat format);

/// Per-call knobs. Environment variables OPENMLA_KERNEL, OPENMLA_MAX_ISA, OPENMLA_NUM_THREADS and
/// OPENMLA_VERBOSE apply when the corresponding field is left at its default.
struct Options {
  int num_threads = 0;           ///< 0: OPENMLA_NUM_THREADS or every online core
  const char* kernel = nullptr;  ///< force a kernel by registry name; fails if it cannot run
};

enum class Op : int32_t {
  kSparseDecode = 0,
  kDenseDecode = 1,
  kSparsePrefill = 2,
  kMqaLogits = 3,         ///< indexer logits, prefill (indexer.h)
  kPagedMqaLogits = 4,    ///< indexer logits, paged decode
  kPagedIndexerTopk = 5,  ///< fused paged logits + top-k
  kCompressor = 6,        ///< V4 KV compressor: pool, RMSNorm, RoPE, store (openmla/compressor.h)
  kMhcPre = 7,
  kMhcPost = 8,
  kMhcHead = 9,
  kEngramGate = 10,
};
const char* op_name(Op op);

/// One registered implementation, as listed by `list_kernels`.
struct KernelInfo {
  const char* name;  ///< e.g. "sparse_decode.ref"
  Op op;
  const char* isa;  ///< "none", "avx2", "avx512", "amx"
  bool runnable;    ///< the host (after the OPENMLA_MAX_ISA cap) can execute it
};

/// Fills up to `capacity` entries in priority order and returns the total number of kernels.
std::size_t list_kernels(KernelInfo* out, std::size_t capacity);

/// CPU features detected at start-up, e.g. "avx2 fma avx512f ... amx_bf16 (amx permitted)".
std::string cpu_features_string();

}  // namespace openmla
