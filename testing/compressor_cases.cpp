// The compressor case of v4_block_cases.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/dtype.h"
#include "openmla/kv_cache.h"
#include "tensors.h"
#include "v4_block_cases.h"

namespace openmla::testing {
namespace {

constexpr int64_t kStateBlock = 16;
constexpr uint8_t kKvFill = 0xEE;

/// 0 .. n - 1, shuffled when `shuffle`.
std::vector<int64_t> order(int64_t n, bool shuffle, Rng& rng) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  if (shuffle)
    for (int64_t i = n - 1; i > 0; --i) std::swap(v[i], v[rng.below(i + 1)]);
  return v;
}

void fill_normal_f32(Rng& rng, std::vector<float>* v, int64_t n, double mean, double sd) {
  v->resize(static_cast<size_t>(n));
  for (float& x : *v) x = static_cast<float>(mean + sd * rng.normal());
}

int64_t state_rows(const CompressorCase& c) {
  const int64_t rows = c.config.seqs * c.config.len;
  return std::max<int64_t>(1, (rows + kStateBlock - 1) / kStateBlock) * kStateBlock;
}

TensorView state_view(const CompressorCase& c) {
  return make_tensor(const_cast<float*>(c.state.data()), DType::kF32,
                     {state_rows(c) / kStateBlock, kStateBlock, 2 * c.width});
}

/// Saves the states of sequence s's tokens before its last one (decode: written by earlier steps).
void save_history(CompressorCase* c, const std::vector<int64_t>& state_slot, Rng& rng) {
  const int64_t len = c->config.len, n = len - 1;
  if (n <= 0) return;
  std::vector<float> a, z;
  std::vector<int64_t> pos(static_cast<size_t>(n)), slots(pos.size());
  for (int64_t s = 0; s < c->config.seqs; ++s) {
    fill_normal_f32(rng, &a, n * c->width, 0.0, 1.0);
    fill_normal_f32(rng, &z, n * c->width, 0.0, 2.0);
    for (int64_t p = 0; p < n; ++p) {
      pos[p] = p;
      slots[p] = state_slot[s * len + p];
    }
    CompressorSaveStatesArgs sa;
    sa.kv = make_tensor(a.data(), DType::kF32, {n, c->width});
    sa.score = make_tensor(z.data(), DType::kF32, {n, c->width});
    sa.ape = make_tensor(c->ape.data(), DType::kF32, {c->config.ratio, c->width});
    sa.positions = make_tensor(pos.data(), DType::kI64, {n});
    sa.state_cache = state_view(*c);
    sa.slot_mapping = make_tensor(slots.data(), DType::kI64, {n});
    (void)compressor_save_states(sa);
  }
}

/// The call's tokens: positions, state slots, window gather slots and entry slots.
void list_tokens(CompressorCase* c, const std::vector<int64_t>& state_slot,
                 const std::vector<int64_t>& kv_slot) {
  const CompressorConfig& g = c->config;
  const int64_t per_seq = g.len / g.ratio;
  for (int64_t s = 0; s < g.seqs; ++s) {
    for (int64_t p = g.prefill ? 0 : g.len - 1; p < g.len; ++p) {
      c->positions.push_back(p);
      c->slots.push_back(state_slot[s * g.len + p]);
      for (int64_t w = 0; w < c->window; ++w) {
        const int64_t q = p - c->window + 1 + w;
        c->gather.push_back(q < 0 ? -1 : state_slot[s * g.len + q]);
      }
      const bool entry = (p + 1) % g.ratio == 0;
      c->kv_slot_mapping.push_back(entry ? kv_slot[s * per_seq + p / g.ratio] : -1);
      c->entries += entry ? 1 : 0;
    }
  }
  c->num_tokens = static_cast<int64_t>(c->positions.size());
}

}  // namespace

CompressorCase make_compressor_case(const CompressorConfig& config) {
  CompressorCase c;
  c.config = config;
  const int64_t d = config.head_dim, ratio = config.ratio;
  c.coff = ratio == 4 ? 2 : 1;
  c.width = c.coff * d;
  c.window = c.coff * ratio;
  Rng rng(config.seed);
  fill_normal_f32(rng, &c.ape, ratio * c.width, 0.0, 0.5);
  fill_normal_f32(rng, &c.weight, d, 1.0, 0.2);
  c.cos_sin.resize(static_cast<size_t>(std::max<int64_t>(config.len, 1) * 64));
  (void)compressor_rope_table(
      160000.0, 16.0, 65536, 32.0, 1.0,
      make_tensor(c.cos_sin.data(), DType::kF32, {std::max<int64_t>(config.len, 1), 64}));
  c.state.assign(static_cast<size_t>(state_rows(c) * 2 * c.width), -12345.0f);
  const int64_t per_seq = config.len / ratio;
  const int64_t pages =
      std::max<int64_t>(1, (config.seqs * per_seq + config.page_size - 1) / config.page_size);
  c.kv_slots = pages * config.page_size;
  const std::vector<int64_t> state_slot = order(config.seqs * config.len, config.shuffle, rng);
  const std::vector<int64_t> kv_slot = order(c.kv_slots, config.shuffle, rng);
  if (!config.prefill) save_history(&c, state_slot, rng);
  list_tokens(&c, state_slot, kv_slot);
  fill_normal_f32(rng, &c.a, c.num_tokens * c.width, 0.0, 1.0);
  fill_normal_f32(rng, &c.z, c.num_tokens * c.width, 0.0, 2.0);
  if (config.format == KvFormat::kModel1)
    (void)kv_page_bytes(KvFormat::kModel1, config.page_size, d, 1, &c.page_bytes);
  else
    c.page_bytes = config.page_size * d * 2;
  c.kv.assign(static_cast<size_t>(pages * c.page_bytes), kKvFill);
  return c;
}

CompressorSaveStatesArgs CompressorCase::save_args() const {
  CompressorSaveStatesArgs sa;
  auto f32 = [](const std::vector<float>& v, std::initializer_list<int64_t> shape) {
    return make_tensor(const_cast<float*>(v.data()), DType::kF32, shape);
  };
  sa.kv = f32(a, {num_tokens, width});
  sa.score = f32(z, {num_tokens, width});
  sa.ape = f32(ape, {config.ratio, width});
  sa.positions = make_tensor(const_cast<int64_t*>(positions.data()), DType::kI64, {num_tokens});
  sa.state_cache = state_view(*this);
  sa.slot_mapping = make_tensor(const_cast<int64_t*>(slots.data()), DType::kI64, {num_tokens});
  return sa;
}

CompressorStoreArgs CompressorCase::store_args() const {
  const int64_t d = config.head_dim, pages = kv_slots / config.page_size;
  CompressorStoreArgs ca;
  ca.state_cache = state_view(*this);
  ca.gather_slots =
      make_tensor(const_cast<int64_t*>(gather.data()), DType::kI64, {num_tokens, window});
  ca.positions = make_tensor(const_cast<int64_t*>(positions.data()), DType::kI64, {num_tokens});
  ca.kv_slot_mapping =
      make_tensor(const_cast<int64_t*>(kv_slot_mapping.data()), DType::kI64, {num_tokens});
  ca.rms_norm_weight = make_tensor(const_cast<float*>(weight.data()), DType::kF32, {d});
  ca.cos_sin_cache = make_tensor(const_cast<float*>(cos_sin.data()), DType::kF32,
                                 {static_cast<int64_t>(cos_sin.size() / 64), 64});
  uint8_t* data = const_cast<uint8_t*>(kv.data());
  if (config.format == KvFormat::kModel1)
    ca.kv_cache = make_strided_tensor(data, DType::kU8, {pages, config.page_size, 1, 584},
                                      {page_bytes, 584, 584, 1});
  else
    ca.kv_cache = make_tensor(data, DType::kBF16, {pages, config.page_size, 1, d});
  ca.compress_ratio = config.ratio;
  return ca;
}

Status CompressorCase::plan(const Options& options, Plan* plan) const {
  return plan_compressor_store(store_args(), options, plan);
}

Status CompressorCase::run(const Plan& plan) const {
  Options o;
  o.num_threads = plan.num_threads();
  const Status s = compressor_save_states(save_args(), o);
  return s.ok() ? run_compressor_store(plan, store_args()) : s;
}

// FLOPs: save, per token, width (z + ape); store, per entry and channel of the head dim d, 6 per
// window slot (max, subtract, exp, add, multiply-add) and 5 after it (divide, mean square, weight),
// plus 192 for RoPE (64 dims, 2 multiplies and an add) and, head dim 128, 896 for the Hadamard
// rotation (7 butterfly stages of 128).
double compressor_flops(const CompressorCase& c) {
  const double d = c.config.head_dim;
  const double per_entry = 6.0 * c.window * d + 5.0 * d + 192 + (d == 128 ? 896 : 0);
  return static_cast<double>(c.num_tokens) * c.width + c.entries * per_entry;
}

// Bytes: save reads a and z (8 width per token) and ape once (4 ratio width) and writes the state
// rows (8 width per token), plus positions and slots (16 per token); store reads, per token, its
// window's gather slots (8 window) and position and entry slot (16), and per entry the window's
// rows (coff halves of d values of a and of z: 8 d per slot), its cos / sin row (256) and writes
// the entry (MODEL1: 584; bf16: 2 d); the RMSNorm weight once (4 d).
double compressor_bytes(const CompressorCase& c) {
  const double d = c.config.head_dim, t = static_cast<double>(c.num_tokens);
  const double save = t * (16.0 * c.width + 16) + 4.0 * c.config.ratio * c.width;
  const double entry = c.config.format == KvFormat::kModel1 ? 584 : 2 * d;
  const double store = t * (8.0 * c.window + 16) + c.entries * (8.0 * d * c.window + 256 + entry);
  return save + store + 4 * d;
}

bool check_compressor(const CompressorCase& answer, const CompressorCase& reference,
                      double* max_err, std::string* message) {
  const int64_t d = answer.config.head_dim, rec = 2 * d;
  if (answer.kv.size() != reference.kv.size() || answer.config.format != KvFormat::kBF16) {
    *message = "needs two BF16-cache runs of one case";
    return false;
  }
  std::vector<bool> written(static_cast<size_t>(answer.kv_slots), false);
  for (int64_t slot : answer.kv_slot_mapping)
    if (slot >= 0) written[static_cast<size_t>(slot)] = true;
  for (int64_t slot = 0; slot < answer.kv_slots; ++slot) {
    const uint8_t* got = answer.kv.data() + slot * rec;
    const uint8_t* want = reference.kv.data() + slot * rec;
    if (!written[static_cast<size_t>(slot)]) {
      if (std::memcmp(got, want, static_cast<size_t>(rec)) == 0) continue;
      *message = "slot " + std::to_string(slot) + " written though no entry names it";
      return false;
    }
    std::vector<uint16_t> g(static_cast<size_t>(d)), w(g.size());
    std::memcpy(g.data(), got, static_cast<size_t>(rec));
    std::memcpy(w.data(), want, static_cast<size_t>(rec));
    double slack = 1e-6;
    if (d == 128)
      for (uint16_t h : w) slack = std::max(slack, 2.0 * std::fabs(bf16_to_float(h)) / 256.0);
    for (int64_t j = 0; j < d; ++j) {
      const double u = bf16_to_float(g[j]), v = bf16_to_float(w[j]), err = std::fabs(u - v);
      *max_err = std::max(*max_err, std::isfinite(err) ? err : 0.0);
      // RoPE (the last 64 dims) rotates interleaved pairs: an input rounding step of one
      // element reaches its partner, so the bound scales with the pair, not the element.
      double scale = std::max(std::fabs(u), std::fabs(v));
      if (j >= d - 64) {
        const int64_t partner = j ^ 1;
        scale = std::max({scale, std::fabs(static_cast<double>(bf16_to_float(g[partner]))),
                          std::fabs(static_cast<double>(bf16_to_float(w[partner])))});
      }
      if (err <= 2.0 * scale / 128.0 + slack) continue;
      *message = "slot " + std::to_string(slot) + " element " + std::to_string(j) + ": " +
                 std::to_string(u) + " vs reference " + std::to_string(v);
      return false;
    }
  }
  return true;
}

}  // namespace openmla::testing
