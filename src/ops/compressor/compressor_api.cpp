// KV compressor API: validates CompressorStoreArgs into CompressorParams (shapes, dtypes and every
// slot and position value), plans and runs; also the two plain functions of the op family,
// compressor_save_states (a copy plus the ape add, one task per token) and compressor_rope_table.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "ops/common/op_entry.h"
#include "ops/compressor/compressor.h"

namespace openmla {
namespace {

std::string at_token(int64_t t) { return " at token " + std::to_string(t); }

Status make_int_view(const TensorView& t, const char* name, int ndim, int64_t num_tokens,
                     IntView* v) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(t, name, {DType::kI32, DType::kI64}, ndim, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, name, 0, num_tokens, "num_tokens"));
  v->data = t.data;
  v->is64 = t.dtype == DType::kI64;
  v->stride0 = t.stride[0];
  v->stride1 = ndim == 2 ? t.stride[1] : 1;
  return Status::Ok();
}

Status check_ratio(int64_t ratio, const char* name) {
  if (ratio == 4 || ratio == 128) return Status::Ok();
  return invalid_argument(std::string(name) + " must be 4 (CSA) or 128 (HCA), got " +
                          std::to_string(ratio));
}

Status make_state_cache(const TensorView& t, int64_t width, StateCache* s) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(t, "state_cache", {DType::kF32}, 3, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(t, "state_cache", 2, 2 * width, "2 * width"));
  s->base = static_cast<float*>(t.data);
  s->num_blocks = t.shape[0];
  s->block_size = t.shape[1];
  s->block_stride = t.stride[0];
  s->row_stride = t.stride[1];
  s->width = width;
  return Status::Ok();
}

/// Slots of the tokens that write (value >= 0) must name a row of `num_slots` and be distinct.
Status check_written_slots(const IntView& slots, const std::vector<int64_t>& tokens,
                           int64_t num_slots, const char* name) {
  std::vector<int64_t> seen;
  for (int64_t t : tokens) {
    const int64_t s = slots.at(t);
    if (s >= num_slots) {
      return invalid_argument(std::string(name) + ": slot " + std::to_string(s) + at_token(t) +
                              " is beyond the cache (" + std::to_string(num_slots) + " slots)");
    }
    if (s >= 0) seen.push_back(s);
  }
  std::sort(seen.begin(), seen.end());
  const auto dup = std::adjacent_find(seen.begin(), seen.end());
  if (dup == seen.end()) return Status::Ok();
  return invalid_argument(std::string(name) + ": slot " + std::to_string(*dup) +
                          " is written by two tokens");
}

Status check_positions(const IntView& positions, int64_t num_tokens) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (positions.at(t) < 0) {
      return invalid_argument("positions: value " + std::to_string(positions.at(t)) + at_token(t) +
                              " is negative");
    }
  }
  return Status::Ok();
}

/// The window of an emitting token: every slot -1 or a state row, the entry's own tokens present.
Status check_window(const CompressorParams& p, int64_t t) {
  for (int64_t w = 0; w < p.window; ++w) {
    const int64_t s = p.gather_slots.at(t, w);
    if (s < -1 || s >= p.state.num_slots()) {
      return invalid_argument("gather_slots: slot " + std::to_string(s) + at_token(t) +
                              " window position " + std::to_string(w) +
                              " is neither -1 nor a state row (" +
                              std::to_string(p.state.num_slots()) + " rows)");
    }
    if (s < 0 && w >= p.window - p.ratio) {
      return invalid_argument("gather_slots: window position " + std::to_string(w) + at_token(t) +
                              " is -1 but holds a token of the entry itself");
    }
  }
  return Status::Ok();
}

Status collect_rows(const TensorView& cos_sin, CompressorParams* p) {
  std::vector<int64_t> emitting;
  for (int64_t t = 0; t < p->num_tokens; ++t) {
    const int64_t pos = p->positions.at(t);
    if ((pos + 1) % p->ratio != 0) continue;
    emitting.push_back(t);
    if (p->kv_slots.at(t) < 0) continue;
    OPENMLA_RETURN_IF_ERROR(check_window(*p, t));
    if (pos + 1 - p->ratio >= cos_sin.shape[0]) {
      return invalid_argument("cos_sin_cache: has " + std::to_string(cos_sin.shape[0]) +
                              " positions, the entry" + at_token(t) + " needs position " +
                              std::to_string(pos + 1 - p->ratio));
    }
    p->rows.push_back(t);
  }
  return check_written_slots(p->kv_slots, emitting, p->kv.num_slots(), "kv_slot_mapping");
}

/// head_dim 512: a MODEL1 or bf16 cache; 128: a bf16 cache or an FP8 (132 B) / FP4 (68 B)
/// indexer cache, validated by indexer_write_keys itself (with no key).
Status make_entry_cache(const TensorView& t, CompressorParams* p) {
  if (p->head_dim == kIndexerHeadDim && t.present() && t.dtype != DType::kBF16) {
    OPENMLA_RETURN_IF_ERROR(check_tensor(t, "kv_cache", {DType::kU8, DType::kI8}, 4, true));
    if (t.shape[3] != 132 && t.shape[3] != 68) {
      return invalid_argument(
          "kv_cache: an indexer cache has 132 (FP8) or 68 (FP4) bytes per token, "
          "got shape " +
          shape_string(t));
    }
    p->indexer_cache = true;
    p->indexer_format = t.shape[3] == 132 ? IndexerKeyFormat::kFp8 : IndexerKeyFormat::kFp4;
    p->indexer_view = t;
    int64_t none = 0;
    const Status st =
        indexer_write_keys(make_tensor(&none, DType::kBF16, {0, 128}),
                           make_tensor(&none, DType::kI64, {0}), p->indexer_format, t);
    if (!st.ok()) return Status(st.code(), "kv_cache (indexer cache): " + st.message());
    p->kv.num_blocks = t.shape[0];
    p->kv.page_size = t.shape[1];
    return Status::Ok();
  }
  OPENMLA_RETURN_IF_ERROR(make_paged_cache(t, "kv_cache", p->head_dim, &p->kv));
  if (p->kv.format == KvFormat::kV32)
    return invalid_argument("kv_cache: must be a MODEL1 (584 B per token) or bf16 512 cache");
  if (p->kv.heads_kv != 1) return invalid_argument("kv_cache: must hold one head");
  return Status::Ok();
}

Status check_store_small_args(const CompressorStoreArgs& a, CompressorParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_ratio(a.compress_ratio, "compress_ratio"));
  OPENMLA_RETURN_IF_ERROR(
      check_tensor(a.rms_norm_weight, "rms_norm_weight", {DType::kF32}, 1, false));
  p->head_dim = a.rms_norm_weight.shape[0];
  if (p->head_dim != kCompressorHeadDim && p->head_dim != kIndexerHeadDim) {
    return unsupported(
        "rms_norm_weight: head_dim must be 512 (MODEL1 entries) or 128 (indexer keys), got " +
        std::to_string(p->head_dim));
  }
  p->hadamard = a.hadamard && p->head_dim == kIndexerHeadDim;
  if (!std::isfinite(a.rms_norm_eps) || a.rms_norm_eps < 0.0f)
    return invalid_argument("rms_norm_eps must be finite and >= 0");
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.cos_sin_cache, "cos_sin_cache", {DType::kF32}, 2, true));
  OPENMLA_RETURN_IF_ERROR(
      check_dim(a.cos_sin_cache, "cos_sin_cache", 1, kCompressorRopeDim, "rope_dim"));
  p->ratio = a.compress_ratio;
  p->coff = p->ratio == 4 ? 2 : 1;
  p->window = p->coff * p->ratio;
  p->norm_weight = static_cast<const float*>(a.rms_norm_weight.data);
  p->norm_weight_stride = a.rms_norm_weight.stride[0];
  p->eps = a.rms_norm_eps;
  p->cos_sin = static_cast<const float*>(a.cos_sin_cache.data);
  p->cos_sin_stride = a.cos_sin_cache.stride[0];
  return Status::Ok();
}

Status validate_store(const CompressorStoreArgs& a, CompressorParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_store_small_args(a, p));
  OPENMLA_RETURN_IF_ERROR(make_state_cache(a.state_cache, p->coff * p->head_dim, &p->state));
  OPENMLA_RETURN_IF_ERROR(
      check_tensor(a.positions, "positions", {DType::kI32, DType::kI64}, 1, false));
  p->num_tokens = a.positions.shape[0];
  OPENMLA_RETURN_IF_ERROR(make_int_view(a.positions, "positions", 1, p->num_tokens, &p->positions));
  OPENMLA_RETURN_IF_ERROR(
      make_int_view(a.gather_slots, "gather_slots", 2, p->num_tokens, &p->gather_slots));
  OPENMLA_RETURN_IF_ERROR(
      check_dim(a.gather_slots, "gather_slots", 1, p->window, "window (coff * ratio)"));
  OPENMLA_RETURN_IF_ERROR(
      make_int_view(a.kv_slot_mapping, "kv_slot_mapping", 1, p->num_tokens, &p->kv_slots));
  OPENMLA_RETURN_IF_ERROR(make_entry_cache(a.kv_cache, p));
  OPENMLA_RETURN_IF_ERROR(check_positions(p->positions, p->num_tokens));
  return collect_rows(a.cos_sin_cache, p);
}

std::vector<int64_t> store_signature(const CompressorParams& p) {
  const int64_t target = p.indexer_cache ? 10 + static_cast<int64_t>(p.indexer_format)
                                         : static_cast<int64_t>(p.kv.format);
  return {p.num_tokens,       p.ratio, p.head_dim, target, p.kv.page_size, p.state.block_size,
          int64_t{p.hadamard}};
}

struct SaveParams {
  int64_t num_tokens = 0, ratio = 0, width = 0;
  const float *kv = nullptr, *score = nullptr, *ape = nullptr;
  int64_t kv_stride = 0, score_stride = 0, ape_stride = 0;
  IntView positions, slots;
  StateCache state;
};

Status check_save_inputs(const CompressorSaveStatesArgs& a, SaveParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.ape, "ape", {DType::kF32}, 2, true));
  p->ratio = a.ape.shape[0];
  p->width = a.ape.shape[1];
  OPENMLA_RETURN_IF_ERROR(check_ratio(p->ratio, "ape: shape[0] (compress_ratio)"));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.kv, "kv", {DType::kF32}, 2, true));
  p->num_tokens = a.kv.shape[0];
  OPENMLA_RETURN_IF_ERROR(check_dim(a.kv, "kv", 1, p->width, "width (ape.shape[1])"));
  OPENMLA_RETURN_IF_ERROR(check_tensor(a.score, "score", {DType::kF32}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.score, "score", 0, p->num_tokens, "num_tokens"));
  OPENMLA_RETURN_IF_ERROR(check_dim(a.score, "score", 1, p->width, "width (ape.shape[1])"));
  p->kv = static_cast<const float*>(a.kv.data);
  p->score = static_cast<const float*>(a.score.data);
  p->ape = static_cast<const float*>(a.ape.data);
  p->kv_stride = a.kv.stride[0];
  p->score_stride = a.score.stride[0];
  p->ape_stride = a.ape.stride[0];
  return Status::Ok();
}

Status validate_save(const CompressorSaveStatesArgs& a, SaveParams* p) {
  OPENMLA_RETURN_IF_ERROR(check_save_inputs(a, p));
  OPENMLA_RETURN_IF_ERROR(make_int_view(a.positions, "positions", 1, p->num_tokens, &p->positions));
  OPENMLA_RETURN_IF_ERROR(
      make_int_view(a.slot_mapping, "slot_mapping", 1, p->num_tokens, &p->slots));
  OPENMLA_RETURN_IF_ERROR(make_state_cache(a.state_cache, p->width, &p->state));
  OPENMLA_RETURN_IF_ERROR(check_positions(p->positions, p->num_tokens));
  std::vector<int64_t> all(static_cast<size_t>(p->num_tokens));
  for (int64_t t = 0; t < p->num_tokens; ++t) all[static_cast<size_t>(t)] = t;
  return check_written_slots(p->slots, all, p->state.num_slots(), "slot_mapping");
}

void save_one(const SaveParams& p, int64_t t) {
  const int64_t slot = p.slots.at(t);
  if (slot < 0) return;
  float* row = p.state.row(slot);
  const float* kv = p.kv + t * p.kv_stride;
  const float* z = p.score + t * p.score_stride;
  const float* ape = p.ape + (p.positions.at(t) % p.ratio) * p.ape_stride;
  for (int64_t j = 0; j < p.width; ++j) row[j] = kv[j];
  for (int64_t j = 0; j < p.width; ++j) row[p.width + j] = z[j] + ape[j];
}

Status check_rope_args(double theta, double factor, int64_t original_seq_len,
                       const TensorView& cos_sin) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(cos_sin, "cos_sin", {DType::kF32}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(cos_sin, "cos_sin", 1, kCompressorRopeDim, "rope_dim"));
  if (!std::isfinite(theta) || theta <= 1.0) return invalid_argument("theta must be > 1");
  if (original_seq_len > 0 && !(std::isfinite(factor) && factor > 0.0))
    return invalid_argument("factor must be > 0 with YaRN (original_seq_len > 0)");
  return Status::Ok();
}

/// YaRN blend weights (1 - ramp) per pair, as `precompute_freqs_cis` (fp32 ramp).
void yarn_smooth(double theta, int64_t original, double beta_fast, double beta_slow,
                 float* smooth) {
  const double d = kCompressorRopeDim;
  auto corr = [&](double rot) {
    return d * std::log(static_cast<double>(original) / (rot * 2 * M_PI)) / (2 * std::log(theta));
  };
  const double low = std::max(std::floor(corr(beta_fast)), 0.0);
  double high = std::min(std::ceil(corr(beta_slow)), d - 1);
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < kCompressorRopeDim / 2; ++i) {
    const float ramp = (static_cast<float>(i) - static_cast<float>(low)) /
                       (static_cast<float>(high) - static_cast<float>(low));
    smooth[i] = 1.0f - std::min(std::max(ramp, 0.0f), 1.0f);
  }
}

}  // namespace

Status plan_compressor_store(const CompressorStoreArgs& args, const Options& options, Plan* plan) {
  return plan_op<CompressorParams>(Op::kCompressor, validate_store, store_signature, args, options,
                                   plan);
}

Status run_compressor_store(const Plan& plan, const CompressorStoreArgs& args) {
  return run_op<CompressorParams>(Op::kCompressor, validate_store, store_signature, plan, args);
}

Status compressor_store(const CompressorStoreArgs& args, const Options& options) {
  return plan_and_run_op<CompressorParams>(Op::kCompressor, validate_store, store_signature, args,
                                           options);
}

Status compressor_save_states(const CompressorSaveStatesArgs& args, const Options& options) {
  return without_exceptions([&] {
    SaveParams p;
    OPENMLA_RETURN_IF_ERROR(validate_save(args, &p));
    parallel_for(p.num_tokens, resolve_num_threads(options.num_threads),
                 [&](int64_t t, int) { save_one(p, t); });
    return Status::Ok();
  });
}

Status compressor_rope_table(double theta, double factor, int64_t original_seq_len,
                             double beta_fast, double beta_slow, const TensorView& cos_sin) {
  OPENMLA_RETURN_IF_ERROR(check_rope_args(theta, factor, original_seq_len, cos_sin));
  constexpr int64_t kPairs = kCompressorRopeDim / 2;
  float freqs[kPairs], smooth[kPairs];
  for (int64_t i = 0; i < kPairs; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(kCompressorRopeDim);
    freqs[i] = 1.0f / std::pow(static_cast<float>(theta), e);
  }
  if (original_seq_len > 0) {
    yarn_smooth(theta, original_seq_len, beta_fast, beta_slow, smooth);
    for (int64_t i = 0; i < kPairs; ++i) {
      freqs[i] = freqs[i] / static_cast<float>(factor) * (1.0f - smooth[i]) + freqs[i] * smooth[i];
    }
  }
  float* out = static_cast<float*>(cos_sin.data);
  for (int64_t pos = 0; pos < cos_sin.shape[0]; ++pos) {
    for (int64_t i = 0; i < kPairs; ++i) {
      const float angle = static_cast<float>(pos) * freqs[i];
      out[pos * cos_sin.stride[0] + i] = std::cos(angle);
      out[pos * cos_sin.stride[0] + kPairs + i] = std::sin(angle);
    }
  }
  return Status::Ok();
}

}  // namespace openmla
