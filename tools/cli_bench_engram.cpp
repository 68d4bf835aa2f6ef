// `openmla bench engram`: the V4.1 Engram gate (default; hc 4, hidden 4096) and, with --stage,
// the n-gram hash (orders 2 .. --orders, --heads primes each, from 16,000,000 as V4.1's prime
// search) and the row gather (--heads * (--orders - 1) rows of --dim bf16 values per token from a
// --rows table, spec v4-blocks.md §3.2). Hash and gather are not dispatched ops: --impl must be
// empty and --vs-ref has no reference to time.
#include <algorithm>
#include <memory>
#include <string>

#include "cli_bench_v4.h"
#include "tensors.h"
#include "v4_block_cases.h"

namespace openmla::cli {
namespace {

constexpr int64_t kMaxTokens = int64_t{1} << 20;

/// The smallest `count` primes from `from` on (trial division; V4.1 searches from 16,000,000).
std::vector<int64_t> primes_from(int64_t from, int64_t count) {
  std::vector<int64_t> out;
  for (int64_t n = from | 1; static_cast<int64_t>(out.size()) < count; n += 2) {
    bool prime = n > 2;
    for (int64_t d = 3; prime && d * d <= n; d += 2) prime = n % d != 0;
    if (prime) out.push_back(n);
  }
  return out;
}

/// The inputs and outputs of engram_hash and engram_embed for `tokens` tokens of one sequence.
struct Lookup {
  int64_t tokens = 0, orders = 0, heads = 0, dim = 0, rows = 0, cols = 0;
  std::vector<int64_t> ids, multipliers, primes;
  std::vector<int32_t> hash;
  std::vector<uint16_t> table, out;
};

std::unique_ptr<Lookup> make_lookup(const Args& f, bool embed) {
  auto l = std::make_unique<Lookup>();
  l->tokens = f.get_int("tokens");
  l->orders = f.get_int("orders");
  l->heads = f.get_int("heads");
  l->dim = f.get_int("dim");
  l->rows = f.get_int("rows");
  l->cols = (l->orders - 1) * l->heads;
  testing::Rng rng(1);
  for (int64_t t = 0; t < l->tokens; ++t) l->ids.push_back(rng.below(99092));
  for (int64_t k = 0; k < l->orders; ++k)
    l->multipliers.push_back(static_cast<int64_t>(rng.next() >> 1) | 1);
  l->primes = primes_from(16000000, l->cols);
  l->hash.resize(static_cast<size_t>(l->tokens * l->cols));
  for (int32_t& h : l->hash) h = static_cast<int32_t>(rng.below(l->rows));
  if (embed) {
    l->table.resize(static_cast<size_t>(l->rows * l->dim));
    for (uint16_t& v : l->table) v = static_cast<uint16_t>(0x3C00 + rng.below(0x800));
    l->out.resize(static_cast<size_t>(l->tokens * l->cols * l->dim));
  }
  return l;
}

/// Hash: no FLOPs (integer work); bytes: the ids (8 per token) and the int32 columns written
/// (4 per column), plus multipliers and primes once. Gather: no FLOPs; bytes: per token and
/// column the row read and written (2 dim each) and its int32 id (4).
int bench_lookup(const Args& f, const BenchCommon& k, const Limits& lim, bool embed) {
  if (k.impls.size() != 1 || !k.impls[0].empty())
    return finish(Status(StatusCode::kInvalidArgument,
                         "--impl: engram hash and embed have no kernel variants"));
  const std::unique_ptr<Lookup> l = make_lookup(f, embed);
  auto i64 = [](std::vector<int64_t>& v, std::initializer_list<int64_t> shape) {
    return make_tensor(v.data(), DType::kI64, shape);
  };
  Options o;
  o.num_threads = k.threads;
  const TensorView hash = make_tensor(l->hash.data(), DType::kI32, {l->tokens, l->cols});
  TimedCall call;
  BenchLine line;
  if (embed) {
    const TensorView table = make_tensor(l->table.data(), DType::kBF16, {l->rows, l->dim});
    const TensorView out = make_tensor(l->out.data(), DType::kBF16, {l->tokens, l->cols * l->dim});
    call = {"engram_embed", [=](std::size_t) { return engram_embed(table, hash, out, o); }};
    line.bytes = static_cast<double>(l->tokens) * l->cols * (4.0 * l->dim + 4);
  } else {
    const TensorView ids = i64(l->ids, {1, l->tokens}), mult = i64(l->multipliers, {l->orders}),
                     primes = i64(l->primes, {l->orders - 1, l->heads}),
                     out = make_tensor(l->hash.data(), DType::kI32, {1, l->tokens, l->cols});
    call = {"engram_hash", [=](std::size_t) { return engram_hash(ids, mult, primes, 2, out, o); }};
    line.bytes = 8.0 * l->tokens + 4.0 * l->tokens * l->cols + 8.0 * (l->orders + l->cols);
  }
  line.json << "\"stage\": \"" << (embed ? "embed" : "hash") << "\", \"tokens\": " << l->tokens
            << ", \"orders\": " << l->orders << ", \"heads\": " << l->heads
            << ", \"dim\": " << l->dim << ", \"rows\": " << l->rows;
  line.table_shape = std::string(embed ? "embed" : "hash") + " t" + std::to_string(l->tokens) +
                     " cols" + std::to_string(l->cols) +
                     (embed ? " d" + std::to_string(l->dim) : "");
  return bench_calls({call}, 1, TimedCall{}, k, lim, embed ? "engram_embed" : "engram_hash", &line);
}

int bench_engram(const Args& f, const BenchCommon& k, const Limits& lim) {
  const std::string stage = f.get("stage");
  if (stage != "gate") return bench_lookup(f, k, lim, stage == "embed");
  testing::EngramGateConfig c;
  c.tokens = f.get_int("tokens");
  c.hidden = f.get_int("hidden");
  c.hc = f.get_int("streams");
  std::vector<testing::EngramGateCase> layers;
  for (int i = 0; i < std::max(k.layers, 1); ++i) {
    c.seed = static_cast<uint64_t>(i) + 1;
    layers.push_back(testing::make_engram_gate_case(c));
  }
  BenchLine line;
  line.flops = testing::engram_gate_flops(layers[0]);
  line.bytes = testing::engram_gate_bytes(layers[0]);
  line.json << "\"stage\": \"gate\", \"tokens\": " << c.tokens << ", \"hidden\": " << c.hidden
            << ", \"streams\": " << c.hc;
  line.table_shape = "gate t" + std::to_string(c.tokens) + " hc" + std::to_string(c.hc) + " d" +
                     std::to_string(c.hidden);
  return bench_planned(layers, Op::kEngramGate, k, lim, "engram_gate", &line);
}

}  // namespace

void add_bench_engram(Command& bench) {
  add_bench_op(bench, "engram", "Engram (V4.1): engram_gate, or --stage hash / embed", bench_engram)
      .add_choice("stage", "gate", {"gate", "hash", "embed"}, "which call")
      .add_int("tokens", 16, "tokens", 1, kMaxTokens)
      .add_int("hidden", 4096, "hidden size (gate)", 1, 65536)
      .add_int("streams", 4, "residual streams (gate)", 1, 64)
      .add_int("orders", 4, "max n-gram order (hash, embed)", 2, 16)
      .add_int("heads", 8, "hash heads per order (hash, embed)", 1, 64)
      .add_int("dim", 256, "table row size (embed)", 1, 4096)
      .add_int("rows", int64_t{1} << 18, "table rows (embed)", 1, int64_t{1} << 26);
}

}  // namespace openmla::cli
