// Cases of the V4 blocks for the CLI (verify, bench), built as the ops' GoogleTests build them:
// mHC (tests/cpp/test_mhc_kernels.cpp: bf16 streams N(1, 1) clamped to +-4, projection rows with
// sd 1 / sqrt(hc * hidden), optional padded strides), the Engram gate (test_engram_kernels.cpp)
// and the KV compressor (test_compressor.cpp: a and z N(0, 1) / N(0, 2), ape, RMSNorm weight
// N(1, 0.2), the V4 YaRN RoPE table, state rows at shuffled slots). Each case plans and runs one
// call with a given kernel; FLOP and byte counts are those of one call (formulas in the .cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "openmla/compressor.h"
#include "openmla/v4_blocks.h"

namespace openmla::testing {

enum class MhcStage { kPre, kPost, kHead };
Op mhc_op(MhcStage stage);

struct MhcConfig {
  MhcStage stage = MhcStage::kPre;
  int64_t tokens = 16, hc = 4, hidden = 4096, sinkhorn_iters = 20;
  bool padded = false;  ///< token / stream strides larger than dense
  uint64_t seed = 1;
};

struct MhcCase {
  MhcConfig config;
  int64_t rows = 0, token_stride = 0, stream_stride = 0;
  std::vector<uint16_t> x, f, y, out;
  std::vector<float> fn, scale, base, post, comb;

  MhcPreArgs pre_args() const;
  MhcHeadArgs head_args() const;
  MhcPostArgs post_args() const;
  Status plan(const Options& options, Plan* plan) const;
  Status run(const Plan& plan) const;
};
MhcCase make_mhc_case(const MhcConfig& config);
double mhc_flops(const MhcCase& c);
double mhc_bytes(const MhcCase& c);
/// bf16 outputs within (|ref| + 0.05) / 128, fp32 post / comb within 2e-5 (1 + |ref|).
bool check_mhc(const MhcCase& answer, const MhcCase& reference, double* max_err,
               std::string* message);

struct EngramGateConfig {
  int64_t tokens = 16, hc = 4, hidden = 4096;
  bool padded = false, in_place = false;
  uint64_t seed = 1;
};

struct EngramGateCase {
  EngramGateConfig config;
  int64_t stream_stride = 0, token_stride = 0;
  std::vector<uint16_t> h, kv, out;
  std::vector<float> w;

  EngramGateArgs args() const;
  Status plan(const Options& options, Plan* plan) const;
  Status run(const Plan& plan) const;
  std::vector<uint16_t> result() const;  ///< the written rows, padding excluded
};
EngramGateCase make_engram_gate_case(const EngramGateConfig& config);
double engram_gate_flops(const EngramGateCase& c);
double engram_gate_bytes(const EngramGateCase& c);
/// Every output within (|ref| + 0.05) / 128.
bool check_engram_gate(const EngramGateCase& answer, const EngramGateCase& reference,
                       double* max_err, std::string* message);

struct CompressorConfig {
  int64_t ratio = 4, head_dim = 512;    ///< ratio 4 or 128; head_dim 512 or 128 (indexer keys)
  KvFormat format = KvFormat::kModel1;  ///< kModel1 or kBF16 (head_dim 128: kBF16 only)
  int64_t seqs = 16, len = 8;           ///< sequences of `len` tokens (positions 0 .. len - 1)
  bool prefill = false;  ///< the call covers every token, else each sequence's last one
  int64_t page_size = 64;
  bool shuffle = false;  ///< state rows and cache slots in random order
  uint64_t seed = 1;
};

/// The tokens before the call are saved when the case is built; the call is
/// compressor_save_states then compressor_store over the call's tokens.
struct CompressorCase {
  CompressorConfig config;
  int64_t coff = 1, width = 0, window = 0, num_tokens = 0, kv_slots = 0, entries = 0;
  std::vector<float> a, z, ape, weight, cos_sin, state;  ///< a, z: the call's tokens
  std::vector<int64_t> positions, slots, gather, kv_slot_mapping;
  std::vector<uint8_t> kv;
  int64_t page_bytes = 0;

  CompressorSaveStatesArgs save_args() const;
  CompressorStoreArgs store_args() const;
  Status plan(const Options& options, Plan* plan) const;
  Status run(const Plan& plan) const;
};
CompressorCase make_compressor_case(const CompressorConfig& config);
double compressor_flops(const CompressorCase& c);
double compressor_bytes(const CompressorCase& c);
/// BF16 cache: every written latent within 2 bf16 units of the larger magnitude (+ head dim 128:
/// 2 units of the row's largest reference value / 2, the Hadamard mix), other bytes identical.
bool check_compressor(const CompressorCase& answer, const CompressorCase& reference,
                      double* max_err, std::string* message);

}  // namespace openmla::testing
