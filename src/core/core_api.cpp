// Status, dtype names and TensorView constructors of the public API.
#include <algorithm>

#include "openmla/core.h"

namespace openmla {

const char* version() {
#ifdef OPENMLA_VERSION_STRING
  return OPENMLA_VERSION_STRING;
#else
  return "unknown";
#endif
}

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kUnsupported: return "unsupported";
    case StatusCode::kOutOfMemory: return "out of memory";
    case StatusCode::kInternal: return "internal error";
    case StatusCode::kWrongDtype: return "wrong dtype";
  }
  return "unknown status";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  return std::string(status_code_name(code_)) + ": " + message_;
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
    case DType::kI8: return 1;
    case DType::kE4M3: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "float32";
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    case DType::kI32: return "int32";
    case DType::kI64: return "int64";
    case DType::kU8: return "uint8";
    case DType::kI8: return "int8";
    case DType::kE4M3: return "float8_e4m3fn";
  }
  return "unknown";
}

const char* kv_format_name(KvFormat format) {
  switch (format) {
    case KvFormat::kBF16: return "bf16";
    case KvFormat::kV32: return "v32";
    case KvFormat::kModel1: return "model1";
  }
  return "unknown";
}

const char* op_name(Op op) {
  switch (op) {
    case Op::kSparseDecode: return "sparse_decode";
    case Op::kDenseDecode: return "dense_decode";
    case Op::kSparsePrefill: return "sparse_prefill";
    case Op::kMqaLogits: return "mqa_logits";
    case Op::kPagedMqaLogits: return "paged_mqa_logits";
    case Op::kPagedIndexerTopk: return "paged_indexer_topk";
    case Op::kCompressor: return "compressor";
    case Op::kMhcPre: return "mhc_pre";
    case Op::kMhcPost: return "mhc_post";
    case Op::kMhcHead: return "mhc_head";
    case Op::kEngramGate: return "engram_gate";
  }
  return "unknown";
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim && i < kMaxDims; ++i) n *= shape[i];
  return n;
}

TensorView make_strided_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                               std::initializer_list<int64_t> stride, Device device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = static_cast<int32_t>(std::min<std::size_t>(shape.size(), kMaxDims));
  std::copy_n(shape.begin(), t.ndim, t.shape);
  std::copy_n(stride.begin(), std::min<std::size_t>(stride.size(), t.ndim), t.stride);
  return t;
}

TensorView make_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                       Device device) {
  TensorView t = make_strided_tensor(data, dtype, shape, {}, device);
  int64_t running = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    t.stride[i] = running;
    running *= std::max<int64_t>(t.shape[i], 1);
  }
  return t;
}

}  // namespace openmla
