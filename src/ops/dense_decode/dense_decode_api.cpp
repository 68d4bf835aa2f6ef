// Dense decode API: validates DenseDecodeArgs into DenseDecodeParams, plans and runs.
#include <string>

#include "ops/common/api_checks.h"
#include "ops/common/op_entry.h"
#include "ops/dense_decode/dense_decode.h"

namespace openmla {
namespace {

Status check_block_table(const DenseDecodeArgs& a, DenseDecodeParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.block_table, "block_table", {DType::kI32}, 2, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.block_table, "block_table", 0, p->batch, "batch"));
  p->block_table = static_cast<const int32_t*>(a.block_table.data);
  p->block_table_stride[0] = a.block_table.stride[0];
  p->block_table_stride[1] = a.block_table.stride[1];
  p->max_blocks = a.block_table.shape[1];
  const int64_t capacity = p->max_blocks * p->kv.page_size;
  OPENMLA_RETURN_IF_ERROR(
      check_lengths(a.cache_seqlens, "cache_seqlens", p->batch, "batch", capacity));
  p->cache_seqlens = static_cast<const int32_t*>(a.cache_seqlens.data);
  p->seqlens_stride = a.cache_seqlens.stride[0];
  for (int64_t b = 0; b < p->batch; ++b) {
    const int64_t used_blocks =
        (p->cache_seqlens[b * p->seqlens_stride] + p->kv.page_size - 1) / p->kv.page_size;
    for (int64_t i = 0; i < used_blocks; ++i) {
      const int64_t page = p->page_of(b, i);
      if (page < 0 || page >= p->kv.num_blocks) {
        return invalid_argument("block_table[" + std::to_string(b) + "][" + std::to_string(i) +
                                "] = " + std::to_string(page) + " is not a page of kv_cache (" +
                                std::to_string(p->kv.num_blocks) + " pages)");
      }
    }
  }
  return Status::Ok();
}

/// FlashMLA: q bf16 or fp16, a 16-bit cache of q's dtype, out in q's dtype. The FP8 caches
/// (an openmla extension) dequantise to bf16 and take bf16 q only.
Status check_q_and_cache_dtypes(const DenseDecodeParams& p) {
  if (p.dtype == DType::kF16 && p.kv.format != KvFormat::kBF16) {
    return Status(StatusCode::kWrongDtype,
                  std::string("q: float16 q needs a float16 kv_cache; an FP8 kv_cache (") +
                      kv_format_name(p.kv.format) + ") takes bfloat16 q");
  }
  return Status::Ok();
}

Status validate(const DenseDecodeArgs& a, DenseDecodeParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.q, "q", {DType::kBF16, DType::kF16}, 4, true));
  p->dtype = a.q.dtype;
  p->batch = a.q.shape[0];
  p->seq_q = a.q.shape[1];
  p->heads_q = a.q.shape[2];
  p->head_dim = a.q.shape[3];
  p->head_dim_v = a.head_dim_v;
  OPENMLA_RETURN_IF_ERROR(check_head_dims(p->head_dim, p->head_dim_v));
  if (p->heads_q < 1) return invalid_argument("q: heads_q (shape[2]) must be at least 1");
  p->q = static_cast<const uint16_t*>(a.q.data);
  for (int d = 0; d < 3; ++d) p->q_stride[d] = a.q.stride[d];
  OPENMLA_RETURN_IF_ERROR(make_paged_cache(a.kv_cache, "kv_cache", p->head_dim, &p->kv, p->dtype));
  OPENMLA_RETURN_IF_ERROR(check_q_and_cache_dtypes(*p));
  p->heads_kv = p->kv.heads_kv;
  if (p->heads_q % p->heads_kv != 0) {
    return invalid_argument("kv_cache: heads_kv (" + std::to_string(p->heads_kv) +
                            ") must divide heads_q (" + std::to_string(p->heads_q) + ")");
  }
  OPENMLA_RETURN_IF_ERROR(check_block_table(a, p));
  p->causal = a.causal;
  OPENMLA_RETURN_IF_ERROR(resolve_softmax_scale(a.softmax_scale, p->head_dim, &p->softmax_scale));
  OPENMLA_RETURN_IF_ERROR(
      check_decode_outputs(a.out, a.lse, p->batch, p->seq_q, p->heads_q, p->head_dim_v, p->dtype));
  p->out = static_cast<uint16_t*>(a.out.data);
  for (int d = 0; d < 3; ++d) p->out_stride[d] = a.out.stride[d];
  p->lse = static_cast<float*>(a.lse.data);
  for (int d = 0; d < 3; ++d) p->lse_stride[d] = a.lse.stride[d];
  return Status::Ok();
}

std::vector<int64_t> signature(const DenseDecodeParams& p) {
  const int64_t format = static_cast<int64_t>(p.kv.format), dtype = static_cast<int64_t>(p.dtype);
  return {p.batch, p.seq_q,        p.heads_q,    p.heads_kv, p.head_dim,
          format,  p.kv.page_size, p.max_blocks, p.causal,   dtype};
}

}  // namespace

Status plan_dense_decode(const DenseDecodeArgs& args, const Options& options, Plan* plan) {
  return plan_op<DenseDecodeParams>(Op::kDenseDecode, validate, signature, args, options, plan);
}

Status run_dense_decode(const Plan& plan, const DenseDecodeArgs& args) {
  return run_op<DenseDecodeParams>(Op::kDenseDecode, validate, signature, plan, args);
}

Status dense_decode(const DenseDecodeArgs& args, const Options& options) {
  return plan_and_run_op<DenseDecodeParams>(Op::kDenseDecode, validate, signature, args, options);
}

}  // namespace openmla
