// Indexer API: validates the args of mqa_logits, paged_mqa_logits, paged_indexer_topk and
// indexer_topk into their params, plans and runs (the unfused top-k runs here directly: it has
// one implementation, the shared selection routine).
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "ops/common/op_entry.h"
#include "ops/indexer/indexer.h"
#include "ops/indexer/indexer_keys.h"

namespace openmla {
namespace {

const std::initializer_list<DType> kCodeDtypes = {DType::kU8, DType::kI8, DType::kE4M3};

std::string str(int64_t v) { return std::to_string(v); }

Status check_query(const TensorView& q, const TensorView& w, int64_t rows, IndexerQuery* out) {
  const int qd = q.ndim;
  if (w.present()) {
    OPENMLA_RETURN_IF_ERROR(check_tensor(w, "weights", {DType::kF32}, 2, false));
    OPENMLA_RETURN_IF_ERROR(check_dim(w, "weights", 0, rows, "rows"));
    OPENMLA_RETURN_IF_ERROR(check_dim(w, "weights", 1, q.shape[qd - 2], "heads"));
  } else {
    return invalid_argument("weights: required");
  }
  out->heads = q.shape[qd - 2];
  out->q = static_cast<const uint8_t*>(q.data);
  out->q_stride_head = q.stride[qd - 2];
  out->w = static_cast<const float*>(w.data);
  out->w_stride_row = w.stride[0];
  out->w_stride_head = w.stride[1];
  return Status::Ok();
}

Status check_q_shape(const TensorView& q) {
  const int qd = q.ndim;
  if (q.shape[qd - 2] < 1)
    return invalid_argument("q: heads (shape[" + str(qd - 2) + "]) must be at least 1");
  if (q.shape[qd - 1] != kIndexerHeadDim)
    return unsupported("q: head dim (last dimension) must be 128, got " + str(q.shape[qd - 1]));
  return Status::Ok();
}

// ---- mqa_logits ------------------------------------------------------------------------------

Status validate_mqa(const MqaLogitsArgs& a, MqaLogitsParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.q, "q", kCodeDtypes, 3, true));
  OPENMLA_RETURN_IF_ERROR(check_q_shape(a.q));
  p->rows = a.q.shape[0];
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.k, "k", kCodeDtypes, 2, true));
  if (a.k.shape[1] != kIndexerHeadDim)
    return unsupported("k: head dim (shape[1]) must be 128, got " + str(a.k.shape[1]));
  p->keys = a.k.shape[0];
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.k_scale, "k_scale", {DType::kF32}, 1, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.k_scale, "k_scale", 0, p->keys, "keys"));
  OPENMLA_RETURN_IF_ERROR(check_query(a.q, a.weights, p->rows, &p->query));
  p->query.q_stride_group = a.q.stride[0];
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.ks, "ks", {DType::kI32}, 1, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.ks, "ks", 0, p->rows, "rows"));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.ke, "ke", {DType::kI32}, 1, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.ke, "ke", 0, p->rows, "rows"));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.logits, "logits", {DType::kF32}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.logits, "logits", 0, p->rows, "rows"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.logits, "logits", 1, p->keys, "keys"));
  if (p->rows > 1 && a.logits.stride[0] < p->keys)
    return invalid_argument("logits: row stride " + str(a.logits.stride[0]) + " is below keys (" +
                            str(p->keys) + "): rows would overlap");
  p->k = static_cast<const uint8_t*>(a.k.data);
  p->k_stride = a.k.stride[0];
  p->k_scale = static_cast<const float*>(a.k_scale.data);
  p->k_scale_stride = a.k_scale.stride[0];
  p->ks = static_cast<const int32_t*>(a.ks.data);
  p->ks_stride = a.ks.stride[0];
  p->ke = static_cast<const int32_t*>(a.ke.data);
  p->ke_stride = a.ke.stride[0];
  p->logits = static_cast<float*>(a.logits.data);
  p->logits_stride = a.logits.stride[0];
  return Status::Ok();
}

std::vector<int64_t> signature_mqa(const MqaLogitsParams& p) {
  return {p.rows, p.keys, p.query.heads};
}

// ---- paged logits ----------------------------------------------------------------------------

Status check_cache(const TensorView& c, IndexerKeyFormat format, IndexerPagedCache* out) {
  if (format != IndexerKeyFormat::kFp8 && format != IndexerKeyFormat::kFp4)
    return invalid_argument("format: unknown indexer key format " +
                            str(static_cast<int64_t>(format)));
  OPENMLA_RETURN_IF_ERROR(check_tensor(c, "kv_cache", {DType::kU8, DType::kI8}, 4, true));
  const int64_t bpt = indexer_bytes_per_token(format);
  OPENMLA_RETURN_IF_ERROR(check_dim(c, "kv_cache", 2, 1, "heads (1)"));
  if (c.shape[3] != bpt)
    return invalid_argument("kv_cache: bytes per token (shape[3]) must be " + str(bpt) + " for " +
                            (format == IndexerKeyFormat::kFp8 ? "fp8" : "fp4") + ", got " +
                            str(c.shape[3]));
  if (c.shape[1] < 1) return invalid_argument("kv_cache: page_size (shape[1]) must be at least 1");
  if (c.stride[1] != bpt)
    return invalid_argument("kv_cache: stride(1) must be " + str(bpt) +
                            " (page-major pages), got " + str(c.stride[1]));
  if (c.shape[0] > 1 && c.stride[0] < c.shape[1] * bpt)
    return invalid_argument("kv_cache: stride(0) " + str(c.stride[0]) + " is below page_size * " +
                            str(bpt));
  out->data = static_cast<const uint8_t*>(c.data);
  out->format = format;
  out->num_blocks = c.shape[0];
  out->page_size = c.shape[1];
  out->block_stride = c.stride[0];
  return Status::Ok();
}

// Every block-table entry a request reads: pages [0, ceil(visible / page_size)).
Status check_block_entries(const int32_t* table, const int64_t stride[2], int64_t b,
                           int64_t visible, int64_t page_size, int64_t max_blocks,
                           int64_t num_blocks, const char* name) {
  const int64_t pages = (visible + page_size - 1) / page_size;
  if (pages > max_blocks)
    return invalid_argument(std::string(name) + ": request " + str(b) + " sees " + str(visible) +
                            " tokens, more than its " + str(max_blocks) + " blocks of " +
                            str(page_size) + " hold");
  for (int64_t i = 0; i < pages; ++i) {
    const int64_t v = table[b * stride[0] + i * stride[1]];
    if (v < 0 || (num_blocks >= 0 && v >= num_blocks)) {
      return invalid_argument(
          std::string(name) + "[" + str(b) + ", " + str(i) + "] = " + str(v) +
          (num_blocks >= 0 ? " is outside [0, " + str(num_blocks) + ")" : " is negative"));
    }
  }
  return Status::Ok();
}

Status validate_paged_common(const PagedMqaLogitsArgs& a, bool want_logits,
                             PagedMqaLogitsParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.q, "q", kCodeDtypes, 4, true));
  OPENMLA_RETURN_IF_ERROR(check_q_shape(a.q));
  p->batch = a.q.shape[0];
  p->next_n = a.q.shape[1];
  if (p->next_n < 1) return invalid_argument("q: next_n (shape[1]) must be at least 1");
  OPENMLA_RETURN_IF_ERROR(check_cache(a.kv_cache, a.format, &p->cache));
  OPENMLA_RETURN_IF_ERROR(check_query(a.q, a.weights, p->batch * p->next_n, &p->query));
  p->query.group = p->next_n;
  p->query.q_stride_group = a.q.stride[0];
  p->query.q_stride_row = a.q.stride[1];
  const TensorView& cl = a.context_lens;
  if (!cl.present()) return invalid_argument("context_lens: required");
  if (cl.ndim == 2) {
    OPENMLA_RETURN_IF_ERROR(check_tensor(cl, "context_lens", {DType::kI32}, 2, false));
    OPENMLA_RETURN_IF_ERROR(check_dim(cl, "context_lens", 0, p->batch, "batch"));
    OPENMLA_RETURN_IF_ERROR(check_dim(cl, "context_lens", 1, p->next_n, "next_n"));
    p->ctx_per_row = true;
    p->ctx_stride[1] = cl.stride[1];
  } else {
    OPENMLA_RETURN_IF_ERROR(check_tensor(cl, "context_lens", {DType::kI32}, 1, false));
    OPENMLA_RETURN_IF_ERROR(check_dim(cl, "context_lens", 0, p->batch, "batch"));
  }
  p->context_lens = static_cast<const int32_t*>(cl.data);
  p->ctx_stride[0] = cl.stride[0];
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.block_table, "block_table", {DType::kI32}, 2, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.block_table, "block_table", 0, p->batch, "batch"));
  p->block_table = static_cast<const int32_t*>(a.block_table.data);
  p->bt_stride[0] = a.block_table.stride[0];
  p->bt_stride[1] = a.block_table.stride[1];
  p->max_blocks = a.block_table.shape[1];
  if (want_logits) {
    OPENMLA_RETURN_IF_ERROR(check_tensor(a.logits, "logits", {DType::kF32}, 2, true));
    OPENMLA_RETURN_IF_ERROR(
        check_dim(a.logits, "logits", 0, p->batch * p->next_n, "batch * next_n"));
    p->logits = static_cast<float*>(a.logits.data);
    p->max_len = a.logits.shape[1];
    p->logits_stride = a.logits.stride[0];
    if (p->batch * p->next_n > 1 && p->logits_stride < p->max_len)
      return invalid_argument("logits: row stride " + str(p->logits_stride) +
                              " is below max_len (" + str(p->max_len) + "): rows would overlap");
  }
  for (int64_t b = 0; b < p->batch; ++b) {
    for (int64_t j = 0; j < p->next_n; ++j) {
      const int64_t raw = p->ctx_per_row
                              ? p->context_lens[b * p->ctx_stride[0] + j * p->ctx_stride[1]]
                              : p->context_lens[b * p->ctx_stride[0]];
      if (raw < 0)
        return invalid_argument("context_lens[" + str(b) + (p->ctx_per_row ? ", " + str(j) : "") +
                                "] = " + str(raw) + " is negative");
      if (want_logits && p->visible(b, j) > p->max_len)
        return invalid_argument("context_lens[" + str(b) + (p->ctx_per_row ? ", " + str(j) : "") +
                                "] = " + str(raw) + ": row sees " + str(p->visible(b, j)) +
                                " tokens, more than logits' max_len " + str(p->max_len));
    }
    OPENMLA_RETURN_IF_ERROR(check_block_entries(p->block_table, p->bt_stride, b,
                                                p->request_visible(b), p->cache.page_size,
                                                p->max_blocks, p->cache.num_blocks, "block_table"));
  }
  return Status::Ok();
}

Status validate_paged(const PagedMqaLogitsArgs& a, PagedMqaLogitsParams* p) {
  return validate_paged_common(a, true, p);
}

std::vector<int64_t> signature_paged(const PagedMqaLogitsParams& p) {
  return {p.batch,           p.next_n,  p.query.heads, static_cast<int64_t>(p.cache.format),
          p.cache.page_size, p.max_len, p.ctx_per_row};
}

// ---- fused paged top-k -----------------------------------------------------------------------

Status validate_fused(const PagedIndexerTopkArgs& a, PagedIndexerTopkParams* p) {
  OPENMLA_RETURN_IF_ERROR(validate_paged_common(a.logits_args, false, &p->lp));
  const PagedMqaLogitsParams& lp = p->lp;
  if (a.out_page_size < 0)
    return invalid_argument("out_page_size: must be >= 0 (0: the cache's page size), got " +
                            str(a.out_page_size));
  p->out_page_size = a.out_page_size == 0 ? lp.cache.page_size : a.out_page_size;
  const TensorView& obt =
      a.out_block_table.present() ? a.out_block_table : a.logits_args.block_table;
  const char* obt_name = a.out_block_table.present() ? "out_block_table" : "block_table";
  if (a.out_block_table.present()) {
    OPENMLA_RETURN_IF_ERROR(check_tensor(obt, obt_name, {DType::kI32}, 2, false));
    OPENMLA_RETURN_IF_ERROR(check_dim(obt, obt_name, 0, lp.batch, "batch"));
  }
  p->out_block_table = static_cast<const int32_t*>(obt.data);
  p->obt_stride[0] = obt.stride[0];
  p->obt_stride[1] = obt.stride[1];
  for (int64_t b = 0; b < lp.batch; ++b)
    OPENMLA_RETURN_IF_ERROR(check_block_entries(p->out_block_table, p->obt_stride, b,
                                                lp.request_visible(b), p->out_page_size,
                                                obt.shape[1], -1, obt_name));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.indices, "indices", {DType::kI32}, 3, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.indices, "indices", 0, lp.batch, "batch"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.indices, "indices", 1, lp.next_n, "next_n"));
  p->topk = a.indices.shape[2];
  if (p->topk < 1) return invalid_argument("indices: topk (shape[2]) must be at least 1");
  p->indices = static_cast<int32_t*>(a.indices.data);
  for (int d = 0; d < 3; ++d) p->idx_stride[d] = a.indices.stride[d];
  if (a.topk_length.present()) {
    OPENMLA_RETURN_IF_ERROR(check_tensor(a.topk_length, "topk_length", {DType::kI32}, 2, false));
    OPENMLA_RETURN_IF_ERROR(check_dim(a.topk_length, "topk_length", 0, lp.batch, "batch"));
    OPENMLA_RETURN_IF_ERROR(check_dim(a.topk_length, "topk_length", 1, lp.next_n, "next_n"));
    p->topk_length = static_cast<int32_t*>(a.topk_length.data);
    p->tl_stride[0] = a.topk_length.stride[0];
    p->tl_stride[1] = a.topk_length.stride[1];
  }
  return Status::Ok();
}

std::vector<int64_t> signature_fused(const PagedIndexerTopkParams& p) {
  std::vector<int64_t> s = signature_paged(p.lp);
  s.push_back(p.topk);
  s.push_back(p.out_page_size);
  return s;
}

// ---- unfused top-k ---------------------------------------------------------------------------

struct TopkParams {
  int64_t rows = 0, n = 0, topk = 0, next_n = 1, page_size = 1;
  const float* logits = nullptr;
  int64_t logits_stride = 0;
  const int32_t* starts = nullptr;
  const int32_t* ends = nullptr;
  int64_t starts_stride = 1, ends_stride = 1;
  const int32_t* block_table = nullptr;
  int64_t bt_stride[2] = {0, 1};
  int32_t* indices = nullptr;
  int64_t idx_stride[2] = {};
  int32_t* topk_length = nullptr;
  int64_t tl_stride = 1;
  int64_t start(int64_t r) const { return starts ? starts[r * starts_stride] : 0; }
  int64_t end(int64_t r) const { return ends[r * ends_stride]; }
};

Status validate_topk(const IndexerTopkArgs& a, TopkParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.logits, "logits", {DType::kF32}, 2, true));
  p->rows = a.logits.shape[0];
  p->n = a.logits.shape[1];
  p->logits = static_cast<const float*>(a.logits.data);
  p->logits_stride = a.logits.stride[0];
  if (a.starts.present()) {
    OPENMLA_RETURN_IF_ERROR(check_tensor(a.starts, "starts", {DType::kI32}, 1, false));
    OPENMLA_RETURN_IF_ERROR(check_dim(a.starts, "starts", 0, p->rows, "rows"));
    p->starts = static_cast<const int32_t*>(a.starts.data);
    p->starts_stride = a.starts.stride[0];
  }
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.ends, "ends", {DType::kI32}, 1, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.ends, "ends", 0, p->rows, "rows"));
  p->ends = static_cast<const int32_t*>(a.ends.data);
  p->ends_stride = a.ends.stride[0];
  for (int64_t r = 0; r < p->rows; ++r) {
    const int64_t s = p->start(r), e = p->end(r);
    if (s < 0 || s > p->n)
      return invalid_argument("starts[" + str(r) + "] = " + str(s) + " is outside [0, " +
                              str(p->n) + "]");
    if (e < s || e > p->n)
      return invalid_argument("ends[" + str(r) + "] = " + str(e) +
                              " is outside [starts = " + str(s) + ", " + str(p->n) + "]");
  }
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.indices, "indices", {DType::kI32}, 2, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.indices, "indices", 0, p->rows, "rows"));
  p->topk = a.indices.shape[1];
  if (p->topk < 1) return invalid_argument("indices: topk (shape[1]) must be at least 1");
  p->indices = static_cast<int32_t*>(a.indices.data);
  p->idx_stride[0] = a.indices.stride[0];
  p->idx_stride[1] = a.indices.stride[1];
  if (a.topk_length.present()) {
    OPENMLA_RETURN_IF_ERROR(check_tensor(a.topk_length, "topk_length", {DType::kI32}, 1, false));
    OPENMLA_RETURN_IF_ERROR(check_dim(a.topk_length, "topk_length", 0, p->rows, "rows"));
    p->topk_length = static_cast<int32_t*>(a.topk_length.data);
    p->tl_stride = a.topk_length.stride[0];
  }
  if (a.block_table.present()) {
    if (a.next_n < 1) return invalid_argument("next_n: must be at least 1, got " + str(a.next_n));
    if (a.page_size < 1)
      return invalid_argument("page_size: must be at least 1, got " + str(a.page_size));
    OPENMLA_RETURN_IF_ERROR(check_tensor(a.block_table, "block_table", {DType::kI32}, 2, false));
    if (a.block_table.shape[0] * a.next_n != p->rows)
      return invalid_argument("block_table: batch (shape[0]) " + str(a.block_table.shape[0]) +
                              " times next_n " + str(a.next_n) + " must equal logits' rows " +
                              str(p->rows));
    p->next_n = a.next_n;
    p->page_size = a.page_size;
    p->block_table = static_cast<const int32_t*>(a.block_table.data);
    p->bt_stride[0] = a.block_table.stride[0];
    p->bt_stride[1] = a.block_table.stride[1];
    for (int64_t r = 0; r < p->rows; ++r)
      OPENMLA_RETURN_IF_ERROR(check_block_entries(p->block_table, p->bt_stride, r / p->next_n,
                                                  p->end(r) - p->start(r), p->page_size,
                                                  a.block_table.shape[1], -1, "block_table"));
  }
  return Status::Ok();
}

void run_topk(const TopkParams& p, int num_threads) {
  std::vector<std::vector<uint64_t>> scratch(static_cast<size_t>(num_threads));
  parallel_for(p.rows, num_threads, [&](int64_t r, int t) {
    std::vector<uint64_t>& keys = scratch[static_cast<size_t>(t)];
    const int64_t s = p.start(r), n = p.end(r) - s;
    keys.resize(static_cast<size_t>(std::max<int64_t>(n, 1)));
    const int64_t count =
        topk_of_scores(p.logits + r * p.logits_stride + s, n, 0, p.topk, keys.data());
    TopkSlotMap map;
    if (p.block_table) {
      map.block_row = p.block_table + (r / p.next_n) * p.bt_stride[0];
      map.bt_stride = p.bt_stride[1];
      map.page_size = p.page_size;
    }
    topk_write_row(keys.data(), count, p.topk, map, p.indices + r * p.idx_stride[0],
                   p.idx_stride[1], p.topk_length ? p.topk_length + r * p.tl_stride : nullptr);
  });
}

}  // namespace

Status plan_mqa_logits(const MqaLogitsArgs& args, const Options& options, Plan* plan) {
  return plan_op<MqaLogitsParams>(Op::kMqaLogits, validate_mqa, signature_mqa, args, options, plan);
}
Status run_mqa_logits(const Plan& plan, const MqaLogitsArgs& args) {
  return run_op<MqaLogitsParams>(Op::kMqaLogits, validate_mqa, signature_mqa, plan, args);
}
Status mqa_logits(const MqaLogitsArgs& args, const Options& options) {
  return plan_and_run_op<MqaLogitsParams>(Op::kMqaLogits, validate_mqa, signature_mqa, args,
                                          options);
}

Status plan_paged_mqa_logits(const PagedMqaLogitsArgs& args, const Options& options, Plan* plan) {
  return plan_op<PagedMqaLogitsParams>(Op::kPagedMqaLogits, validate_paged, signature_paged, args,
                                       options, plan);
}
Status run_paged_mqa_logits(const Plan& plan, const PagedMqaLogitsArgs& args) {
  return run_op<PagedMqaLogitsParams>(Op::kPagedMqaLogits, validate_paged, signature_paged, plan,
                                      args);
}
Status paged_mqa_logits(const PagedMqaLogitsArgs& args, const Options& options) {
  return plan_and_run_op<PagedMqaLogitsParams>(Op::kPagedMqaLogits, validate_paged, signature_paged,
                                               args, options);
}

Status plan_paged_indexer_topk(const PagedIndexerTopkArgs& args, const Options& options,
                               Plan* plan) {
  return plan_op<PagedIndexerTopkParams>(Op::kPagedIndexerTopk, validate_fused, signature_fused,
                                         args, options, plan);
}
Status run_paged_indexer_topk(const Plan& plan, const PagedIndexerTopkArgs& args) {
  return run_op<PagedIndexerTopkParams>(Op::kPagedIndexerTopk, validate_fused, signature_fused,
                                        plan, args);
}
Status paged_indexer_topk(const PagedIndexerTopkArgs& args, const Options& options) {
  return plan_and_run_op<PagedIndexerTopkParams>(Op::kPagedIndexerTopk, validate_fused,
                                                 signature_fused, args, options);
}

Status indexer_topk(const IndexerTopkArgs& args, const Options& options) {
  return without_exceptions([&] {
    TopkParams p;
    OPENMLA_RETURN_IF_ERROR(validate_topk(args, &p));
    run_topk(p, resolve_num_threads(options.num_threads));
    return Status::Ok();
  });
}

}  // namespace openmla
