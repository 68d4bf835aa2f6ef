// openmla public API: the DeepSeek V4 residual blocks, mHC (manifold-constrained hyper-connections)
// and Engram (hashed n-gram memory, V4.1).
//
// mHC keeps `hc` residual streams per token, X [tokens, hc, hidden] bf16 (V4: hc = 4). Each site
// has a projection hc_fn [(2 + hc) * hc, hc * hidden] fp32, hc_base [(2 + hc) * hc] and
// hc_scale [3] (hc_head: hc rows, hc bases, one scale). With v = vec(X_t) in fp32 and
// r = 1 / sqrt(mean(v^2) + rms_eps), mix = (hc_fn v) * r, then (j, k < hc)
//   pre_j  = sigmoid(mix_j * scale_0 + base_j) + hc_eps
//   post_j = 2 * sigmoid(mix_{hc+j} * scale_1 + base_{hc+j})
//   comb   = Sinkhorn(L), L_jk = mix_{2hc+hc*j+k} * scale_2 + base_{2hc+hc*j+k}: a row softmax
//            plus hc_eps, a column normalisation, then sinkhorn_iters - 1 times a row and a
//            column normalisation (each divides by the sum + hc_eps)
//   y      = sum_j pre_j X_j, rounded to bf16.
// hc_post gives X'_k = post_k * f + sum_j comb_jk X_j (the column of comb picks the output
// stream). The argument split follows vLLM's hc_pre_fused_cpu / hc_post_fused_cpu /
// hc_head_fused_cpu. Math is fp32 throughout; every kernel is bitwise thread-invariant.
//
// Engram: engram_hash maps compressed token ids to table rows, engram_embed gathers the rows and
// engram_gate adds the gated value to the streams (formulas at each declaration).
#pragma once

#include "openmla/attention.h"

namespace openmla {

/// mHC pre-site mixing (vLLM `hc_pre_fused_cpu`): y, post and comb for every token.
struct MhcPreArgs {
  TensorView x;                 ///< residual [tokens, hc, hidden] bf16, hidden contiguous
  TensorView hc_fn;             ///< [(2 + hc) * hc, hc * hidden] fp32, rows contiguous
  TensorView hc_scale;          ///< [3] fp32
  TensorView hc_base;           ///< [(2 + hc) * hc] fp32
  int64_t sinkhorn_iters = 20;  ///< >= 1 (V4: 20)
  float rms_eps = 1e-6f;        ///< inside the rsqrt of the flattened mean square, >= 0
  float hc_eps = 1e-6f;         ///< pre offset and Sinkhorn epsilon (vLLM's merged hc_eps), >= 0
  TensorView y;                 ///< [tokens, hidden] bf16 (written)
  TensorView post;              ///< [tokens, hc] fp32 (written)
  TensorView comb;              ///< [tokens, hc, hc] fp32 (written), comb[t, j, k]
};
Status plan_mhc_pre(const MhcPreArgs& args, const Options& options, Plan* plan);
Status run_mhc_pre(const Plan& plan, const MhcPreArgs& args);
Status mhc_pre(const MhcPreArgs& args, const Options& options = {});

/// mHC post-site update (vLLM `hc_post_fused_cpu`): out_k = post_k * x + sum_j comb_jk res_j.
struct MhcPostArgs {
  TensorView x;         ///< sublayer output f [tokens, hidden] bf16
  TensorView residual;  ///< [tokens, hc, hidden] bf16
  TensorView post;      ///< [tokens, hc] fp32
  TensorView comb;      ///< [tokens, hc, hc] fp32
  TensorView out;       ///< [tokens, hc, hidden] bf16 (written; must not overlap the inputs)
};
Status plan_mhc_post(const MhcPostArgs& args, const Options& options, Plan* plan);
Status run_mhc_post(const Plan& plan, const MhcPostArgs& args);
Status mhc_post(const MhcPostArgs& args, const Options& options = {});

/// mHC head (vLLM `hc_head_fused_cpu`): out = sum_j pre_j X_j with pre as in hc_pre, from hc
/// projection rows and one scale.
struct MhcHeadArgs {
  TensorView x;         ///< [tokens, hc, hidden] bf16
  TensorView hc_fn;     ///< [hc, hc * hidden] fp32
  TensorView hc_scale;  ///< [1] fp32
  TensorView hc_base;   ///< [hc] fp32
  float rms_eps = 1e-6f;
  float hc_eps = 1e-6f;
  TensorView out;  ///< [tokens, hidden] bf16 (written)
};
Status plan_mhc_head(const MhcHeadArgs& args, const Options& options, Plan* plan);
Status run_mhc_head(const Plan& plan, const MhcHeadArgs& args);
Status mhc_head(const MhcHeadArgs& args, const Options& options = {});

/// Engram n-gram hashing (DeepSeek's Engram demo `NgramHashMapping._get_ngram_hashes` plus the
/// table offsets). For token t of sequence b and look-back k, x_k = input_ids[b, t - k] (pad_id
/// before the sequence start); the running hash after look-back k is
/// mix_k = (x_0 m_0) XOR ... XOR (x_k m_k) (int64, wrapping), and column (k - 1) * heads + h is
/// (mix_k mod primes[k - 1, h]) (non-negative) + the sum of the primes before it in row-major
/// order. input_ids: [batch, seq] int64; multipliers: [max_ngram] int64; primes: [max_ngram - 1,
/// heads] int64, each > 0; out: [batch, seq, (max_ngram - 1) * heads] int32 or int64 (written;
/// int32 needs the total of the primes to fit).
Status engram_hash(const TensorView& input_ids, const TensorView& multipliers,
                   const TensorView& primes, int64_t pad_id, const TensorView& out,
                   const Options& options = {});

/// Engram row gather: out[t, c * D : (c + 1) * D] = table[hash_ids[t, c]]. table: [rows, D] bf16
/// or fp32; hash_ids: [tokens, cols] int32 or int64, each in [0, rows); out: [tokens, cols * D]
/// of the table's dtype.
Status engram_embed(const TensorView& table, const TensorView& hash_ids, const TensorView& out,
                    const Options& options = {});

/// Engram gate (V4.1): per token t and stream i, with K_i = kv[t, i*D:(i+1)*D] and
/// V = kv[t, hc*D:(hc+1)*D], d = sum_c h_i[c] w[i,c] K_i[c] * rstd(h_i) * rstd(K_i) / sqrt(D)
/// (rstd(z) = 1 / sqrt(mean(z^2) + eps)), g = sigmoid(sign(d) sqrt(max(|d|, clamp_value))),
/// out_i = h_i + g V rounded to bf16.
struct EngramGateArgs {
  TensorView h;               ///< [tokens, hc, hidden] bf16
  TensorView kv;              ///< [tokens, (hc + 1) * hidden] bf16: hc keys, then the value
  TensorView gate_weight;     ///< [hc, hidden] fp32 (q_weight * k_weight)
  float eps = 1e-6f;          ///< RMS epsilon, >= 0
  float clamp_value = 1e-6f;  ///< lower bound of |d| before the square root, >= 0
  TensorView out;  ///< [tokens, hc, hidden] bf16 (written; may be h itself, not a shifted view)
};
Status plan_engram_gate(const EngramGateArgs& args, const Options& options, Plan* plan);
Status run_engram_gate(const Plan& plan, const EngramGateArgs& args);
Status engram_gate(const EngramGateArgs& args, const Options& options = {});

}  // namespace openmla
