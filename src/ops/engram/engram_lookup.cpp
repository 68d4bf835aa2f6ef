// Engram lookup: the n-gram hash (DeepSeek's Engram demo `NgramHashMapping._get_ngram_hashes`
// plus the per-layer table offsets of its MultiHeadEmbedding) and the embedding-row gather.
// Both are integer / copy work, validated here and run over the thread pool, one task per
// sequence (hash) or token (gather), so results never depend on the thread count.
// Hash details: products wrap modulo 2^64 like NumPy's int64, and `mod` is the floor modulo
// (a non-negative residue, as NumPy's % with a positive divisor).
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/thread_pool.h"
#include "openmla/v4_blocks.h"

namespace openmla {
namespace {

struct HashProblem {
  int64_t batch = 0, seq = 0, max_ngram = 0, heads = 0, pad_id = 0;
  const int64_t* ids = nullptr;
  int64_t ids_stride[2] = {};
  std::vector<int64_t> multipliers, primes, offsets;  // primes / offsets: [(max_ngram-1) * heads]
  void* out = nullptr;
  bool out_i32 = false;
  int64_t out_stride[3] = {};
};

Status read_hash_tables(const TensorView& multipliers, const TensorView& primes, HashProblem* h) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(multipliers, "multipliers", {DType::kI64}, 1, false));
  h->max_ngram = multipliers.shape[0];
  if (h->max_ngram < 2) return invalid_argument("multipliers: need max_ngram >= 2 entries");
  for (int64_t k = 0; k < h->max_ngram; ++k)
    h->multipliers.push_back(
        static_cast<const int64_t*>(multipliers.data)[k * multipliers.stride[0]]);
  OPENMLA_RETURN_IF_ERROR(check_tensor(primes, "primes", {DType::kI64}, 2, false));
  OPENMLA_RETURN_IF_ERROR(check_dim(primes, "primes", 0, h->max_ngram - 1, "max_ngram - 1"));
  h->heads = primes.shape[1];
  if (h->heads < 1) return invalid_argument("primes: need at least one head (shape[1])");
  int64_t total = 0;
  for (int64_t n = 0; n < h->max_ngram - 1; ++n) {
    for (int64_t j = 0; j < h->heads; ++j) {
      const int64_t p =
          static_cast<const int64_t*>(primes.data)[n * primes.stride[0] + j * primes.stride[1]];
      if (p < 1 || __builtin_add_overflow(total, p, &total))
        return invalid_argument("primes[" + std::to_string(n) + ", " + std::to_string(j) +
                                "]: table sizes must be positive and sum within int64");
      h->offsets.push_back(total - p);
      h->primes.push_back(p);
    }
  }
  if (h->out_i32 && total - 1 > std::numeric_limits<int32_t>::max())
    return invalid_argument("out: int32 rows cannot address " + std::to_string(total) +
                            " table rows; pass an int64 out");
  return Status::Ok();
}

Status validate_hash(const TensorView& ids, const TensorView& multipliers, const TensorView& primes,
                     int64_t pad_id, const TensorView& out, HashProblem* h) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(ids, "input_ids", {DType::kI64}, 2, false));
  h->batch = ids.shape[0];
  h->seq = ids.shape[1];
  h->ids = static_cast<const int64_t*>(ids.data);
  h->ids_stride[0] = ids.stride[0];
  h->ids_stride[1] = ids.stride[1];
  h->pad_id = pad_id;
  OPENMLA_RETURN_IF_ERROR(check_tensor(out, "out", {DType::kI32, DType::kI64}, 3, false));
  h->out_i32 = out.dtype == DType::kI32;
  OPENMLA_RETURN_IF_ERROR(read_hash_tables(multipliers, primes, h));
  OPENMLA_RETURN_IF_ERROR(check_dim(out, "out", 0, h->batch, "batch"));
  OPENMLA_RETURN_IF_ERROR(check_dim(out, "out", 1, h->seq, "seq"));
  OPENMLA_RETURN_IF_ERROR(
      check_dim(out, "out", 2, (h->max_ngram - 1) * h->heads, "(max_ngram - 1) * heads"));
  h->out = out.data;
  for (int d = 0; d < 3; ++d) h->out_stride[d] = out.stride[d];
  return Status::Ok();
}

int64_t wrapping_mul(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}

void hash_sequence(const HashProblem& h, int64_t b) {
  for (int64_t t = 0; t < h.seq; ++t) {
    int64_t mix = wrapping_mul(h.ids[b * h.ids_stride[0] + t * h.ids_stride[1]], h.multipliers[0]);
    for (int64_t k = 1; k < h.max_ngram; ++k) {
      const int64_t x =
          t - k >= 0 ? h.ids[b * h.ids_stride[0] + (t - k) * h.ids_stride[1]] : h.pad_id;
      mix ^= wrapping_mul(x, h.multipliers[k]);
      for (int64_t j = 0; j < h.heads; ++j) {
        const int64_t col = (k - 1) * h.heads + j;
        int64_t row = mix % h.primes[col];
        if (row < 0) row += h.primes[col];
        row += h.offsets[col];
        const int64_t at = b * h.out_stride[0] + t * h.out_stride[1] + col * h.out_stride[2];
        if (h.out_i32)
          static_cast<int32_t*>(h.out)[at] = static_cast<int32_t>(row);
        else
          static_cast<int64_t*>(h.out)[at] = row;
      }
    }
  }
}

int64_t read_index(const TensorView& ids, int64_t t, int64_t c) {
  const int64_t at = t * ids.stride[0] + c * ids.stride[1];
  return ids.dtype == DType::kI32 ? static_cast<const int32_t*>(ids.data)[at]
                                  : static_cast<const int64_t*>(ids.data)[at];
}

Status validate_embed(const TensorView& table, const TensorView& ids, const TensorView& out) {
  OPENMLA_RETURN_IF_ERROR(check_tensor(table, "table", {DType::kBF16, DType::kF32}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_tensor(ids, "hash_ids", {DType::kI32, DType::kI64}, 2, false));
  OPENMLA_RETURN_IF_ERROR(check_tensor(out, "out", {table.dtype}, 2, true));
  OPENMLA_RETURN_IF_ERROR(check_dim(out, "out", 0, ids.shape[0], "tokens"));
  OPENMLA_RETURN_IF_ERROR(check_dim(out, "out", 1, ids.shape[1] * table.shape[1], "cols * dim"));
  for (int64_t t = 0; t < ids.shape[0]; ++t) {
    for (int64_t c = 0; c < ids.shape[1]; ++c) {
      const int64_t row = read_index(ids, t, c);
      if (row < 0 || row >= table.shape[0])
        return invalid_argument("hash_ids[" + std::to_string(t) + ", " + std::to_string(c) +
                                "] = " + std::to_string(row) + " is not a row of table " +
                                shape_string(table));
    }
  }
  return Status::Ok();
}

}  // namespace

Status engram_hash(const TensorView& input_ids, const TensorView& multipliers,
                   const TensorView& primes, int64_t pad_id, const TensorView& out,
                   const Options& options) {
  HashProblem h;
  OPENMLA_RETURN_IF_ERROR(validate_hash(input_ids, multipliers, primes, pad_id, out, &h));
  parallel_for(h.batch, resolve_num_threads(options.num_threads),
               [&](int64_t b, int) { hash_sequence(h, b); });
  return Status::Ok();
}

Status engram_embed(const TensorView& table, const TensorView& hash_ids, const TensorView& out,
                    const Options& options) {
  OPENMLA_RETURN_IF_ERROR(validate_embed(table, hash_ids, out));
  const int64_t dim = table.shape[1], cols = hash_ids.shape[1];
  const std::size_t row_bytes = dim * dtype_size(table.dtype);
  const char* src = static_cast<const char*>(table.data);
  char* dst = static_cast<char*>(out.data);
  const int64_t esz = static_cast<int64_t>(dtype_size(table.dtype));
  parallel_for(hash_ids.shape[0], resolve_num_threads(options.num_threads), [&](int64_t t, int) {
    for (int64_t c = 0; c < cols; ++c)
      std::memcpy(dst + (t * out.stride[0] + c * dim) * esz,
                  src + read_index(hash_ids, t, c) * table.stride[0] * esz, row_bytes);
  });
  return Status::Ok();
}

}  // namespace openmla
