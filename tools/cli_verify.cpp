// `openmla verify`: random FlashMLA-style cases for every op x format x runnable kernel, each
// compared with the reference kernel at the spec §7.2 tolerances (dense decode also with fp16
// q / cache / out, where out must also be within one fp16 step; a kernel that declines fp16 is
// counted as skipped). The reference itself is also cross-checked: an FP8 cache must give
// bit-identical results to its dequantised BF16 copy. The indexer's paged logits and fused top-k
// run random kFp8 / kFp4 cases (testing/indexer_cases.h: NaN bytes in every unseen slot) against
// the reference logits. The V4 blocks (compressor, mHC, Engram gate): cli_verify_v4.cpp.
#include <cstdio>
#include <functional>
#include <utility>

#include "cli_common.h"
#include "cli_verify_v4.h"
#include "indexer_cases.h"
#include "openmla/kv_cache.h"

namespace openmla::cli {
namespace {

struct Tally {
  int passed = 0, failed = 0, skipped = 0;
};

template <typename T>
T pick(testing::Rng& rng, std::initializer_list<T> values) {
  return values.begin()[rng.below(static_cast<int64_t>(values.size()))];
}

testing::SparseDecodeConfig random_sparse_decode(KvFormat format, uint64_t seed) {
  testing::Rng rng(seed);
  testing::SparseDecodeConfig c;
  c.format = format;
  c.head_dim = pick<int64_t>(rng, {576, 512});
  c.batch = 1 + rng.below(3);
  c.seq_q = 1 + rng.below(2);
  c.heads_q = pick<int64_t>(rng, {1, 3, 8, 16, 16, 64});
  c.topk = pick<int64_t>(rng, {1, 7, 64, 100, 128});
  c.page_size = pick<int64_t>(rng, {1, 2, 53, 61, 64, 69, 256});
  c.cache_tokens = c.topk / 2 + 1 + rng.below(300);
  c.topk_length = rng.uniform() < 0.5;
  c.zero_lengths = rng.uniform() < 0.2;
  c.all_invalid = rng.uniform() < 0.05;
  c.sink = rng.uniform() < 0.6;
  c.non_contiguous = rng.uniform() < 0.5;
  c.softmax_scale = rng.uniform() < 0.5 ? 0.0f : 0.05f;
  if (rng.uniform() < 0.5) {
    c.extra_topk = pick<int64_t>(rng, {1, 64, 128});
    c.extra_page_size = pick<int64_t>(rng, {2, 61, 64});
    c.extra_cache_tokens = 1 + rng.below(200);
    c.extra_topk_length = rng.uniform() < 0.5;
  }
  c.seed = seed;
  return c;
}

testing::DenseDecodeConfig random_dense_decode(KvFormat format, DType dtype, uint64_t seed) {
  testing::Rng rng(seed);
  testing::DenseDecodeConfig c;
  c.format = format;
  c.dtype = dtype;
  c.head_dim = pick<int64_t>(rng, {576, 512});
  c.batch = 1 + rng.below(3);
  c.seq_q = 1 + rng.below(4);
  c.heads_q = pick<int64_t>(rng, {1, 8, 16, 64});
  c.heads_kv = format == KvFormat::kBF16 ? pick<int64_t>(rng, {1, 1, 2, 4}) : 1;
  if (c.heads_q % c.heads_kv) c.heads_kv = 1;
  c.page_size = pick<int64_t>(rng, {1, 2, 61, 64, 69});
  c.cache_tokens = pick<int64_t>(rng, {0, 1, 63, 64, 65, 200});
  c.zero_lengths = rng.uniform() < 0.2;
  c.causal = rng.uniform() < 0.5;
  c.non_contiguous = rng.uniform() < 0.5;
  c.seed = seed;
  return c;
}

testing::SparsePrefillConfig random_sparse_prefill(uint64_t seed) {
  testing::Rng rng(seed);
  testing::SparsePrefillConfig c;
  c.head_dim = pick<int64_t>(rng, {576, 512});
  c.seq_q = 1 + rng.below(8);
  c.heads_q = pick<int64_t>(rng, {1, 8, 16, 64});
  c.heads_kv = pick<int64_t>(rng, {1, 1, 2});
  if (c.heads_q % c.heads_kv) c.heads_kv = 1;
  c.topk = pick<int64_t>(rng, {1, 64, 100, 128});
  c.seq_kv = 1 + rng.below(300);
  c.topk_length = rng.uniform() < 0.5;
  c.sink = rng.uniform() < 0.5;
  c.all_invalid_rows = rng.uniform() < 0.3;
  c.non_contiguous = rng.uniform() < 0.5;
  c.seed = seed;
  return c;
}

/// Reference on the FP8 cache vs reference on its dequantised BF16 copy: must match bitwise.
CheckResult fp8_vs_dequantised(const testing::SparseDecodeCase& c, const RunResult& reference) {
  testing::SparseDecodeCase bf16 = c;
  auto convert = [](testing::CacheBundle* kv) {
    testing::OwnedTensor latents =
        testing::make_owned(DType::kBF16, {kv->num_blocks, kv->page_size, 1, kv->head_dim}, false);
    dequantize_kv_cache(kv->cache.view, kv->format, latents.view);
    *kv = testing::make_cache(KvFormat::kBF16, std::move(latents), kv->head_dim);
  };
  convert(&bf16.kv);
  if (c.config.extra_topk > 0) convert(&bf16.extra_kv);
  const RunResult r = run_case(bf16, "sparse_decode.ref", 0);
  CheckResult out;
  out.ok = r.status.ok() && testing::bitwise_equal(r.out, reference.out) &&
           testing::bitwise_equal(r.lse, reference.lse);
  if (!out.ok) out.message = "FP8 cache and its dequantised BF16 copy disagree";
  return out;
}

/// Dense decode: spec tolerance, and for fp16 out at most one fp16 step from the reference.
CheckResult check_dense_decode(const RunResult& ans, const RunResult& ref, bool fp16) {
  CheckResult r = check_decode(ans, ref, testing::kDenseDecodeOut);
  if (!r.ok || !fp16) return r;
  const testing::CompareResult step = testing::compare(ans.out, ref.out, testing::kFp16OutStep);
  if (!step.ok) {
    r.ok = false;
    r.message = "out (one fp16 step): " + step.message;
  }
  return r;
}

void report(const char* op, const char* format, const std::string& kernel, const Tally& t,
            double max_err, const std::string& first_failure, const std::string& skip_reason) {
  std::printf("%-15s %-7s %-22s %4d passed %3d failed  max_abs_err %.3g\n", op, format,
              kernel.c_str(), t.passed, t.failed, max_err);
  if (t.skipped > 0) std::printf("    %d skipped: %s\n", t.skipped, skip_reason.c_str());
  if (!first_failure.empty()) std::printf("    first failure: %s\n", first_failure.c_str());
}

/// Runs `cases` generated cases through every runnable kernel of `op` against the reference
/// with `check(answer, reference)`; a kernel that reports kUnsupported for a case is skipped.
template <typename MakeCase, typename ExtraCheck, typename Check>
Tally verify_op(Op op, const char* format, int cases, uint64_t seed, MakeCase&& make_case,
                ExtraCheck&& extra_check, Check&& check) {
  Tally total;
  const std::string reference = std::string(op_name(op)) + ".ref";
  for (const std::string& kernel : runnable_kernels(op)) {
    Tally t;
    double max_err = 0.0;
    std::string first_failure, skip_reason;
    for (int i = 0; i < cases; ++i) {
      const auto c = make_case(seed * 1000003 + i);
      const RunResult ref = run_case(c, reference, 0);
      const RunResult ans = kernel == reference ? ref : run_case(c, kernel, 0);
      if (kernel != reference && ans.status.code() == StatusCode::kUnsupported) {
        ++t.skipped;
        skip_reason = ans.status.message();
        continue;
      }
      CheckResult r = check(ans, ref);
      if (r.ok && kernel == reference) r = extra_check(c, ref);
      max_err = std::max(max_err, r.max_abs_err);
      (r.ok ? t.passed : t.failed)++;
      if (!r.ok && first_failure.empty())
        first_failure = "case " + std::to_string(i) + ": " + r.message;
    }
    report(op_name(op), format, kernel, t, max_err, first_failure, skip_reason);
    total.passed += t.passed;
    total.failed += t.failed;
    total.skipped += t.skipped;
  }
  return total;
}

testing::IndexerConfig random_indexer(IndexerKeyFormat format, uint64_t seed) {
  testing::Rng rng(seed);
  testing::IndexerConfig c;
  c.format = format;
  c.batch = 1 + rng.below(3);
  c.next_n = 1 + rng.below(2);
  c.heads = pick<int64_t>(rng, {1, 8, 32, 64});
  c.page_size = pick<int64_t>(rng, {1, 61, 64});
  c.tokens = pick<int64_t>(rng, {0, 1, 100, 700, 2000});
  c.random_lengths = rng.uniform() < 0.5;
  c.topk = pick<int64_t>(rng, {1, 16, 64, 512});
  c.seed = seed;
  return c;
}

/// Every runnable kernel of the paged indexer logits and the fused top-k vs the reference logits.
Tally verify_indexer(IndexerKeyFormat format, int cases, uint64_t seed) {
  Tally total;
  const char* fmt = format == IndexerKeyFormat::kFp8 ? "fp8" : "fp4";
  for (Op op : {Op::kPagedMqaLogits, Op::kPagedIndexerTopk}) {
    for (const std::string& kernel : runnable_kernels(op)) {
      Tally t;
      double max_err = 0.0;
      std::string first_failure;
      for (int i = 0; i < cases; ++i) {
        const testing::IndexerCase c =
            testing::make_indexer_case(random_indexer(format, seed * 1000003 + i));
        const testing::IndexerRun ref = testing::run_indexer_logits(c, "paged_mqa_logits.ref", 0);
        std::string message;
        bool ok;
        if (op == Op::kPagedMqaLogits) {
          double err = 0.0;
          ok = testing::check_indexer_logits(c, testing::run_indexer_logits(c, kernel, 0), ref,
                                             &err, &message);
          max_err = std::max(max_err, err);
        } else {
          ok = testing::check_indexer_topk(c, testing::run_indexer_topk(c, kernel, 0), ref,
                                           &message);
        }
        (ok ? t.passed : t.failed)++;
        if (!ok && first_failure.empty())
          first_failure = "case " + std::to_string(i) + ": " + message;
      }
      report(op_name(op), fmt, kernel, t, max_err, first_failure, "");
      total.passed += t.passed;
      total.failed += t.failed;
    }
  }
  return total;
}

int run_verify(const Args& args) {
  const uint64_t seed = static_cast<uint64_t>(args.get_int("seed"));
  const int cases = static_cast<int>(args.get_int("cases"));
  const std::string op = args.get("op");
  const std::string only = op == "all" ? "" : op;
  Tally total;
  auto add = [&](const Tally& t) {
    total.passed += t.passed;
    total.failed += t.failed;
    total.skipped += t.skipped;
  };
  const auto no_extra = [](const auto&, const RunResult&) { return CheckResult{}; };
  const auto decode = [](const RunResult& a, const RunResult& r) { return check_decode(a, r); };
  const auto prefill = [](const RunResult& a, const RunResult& r) { return check_prefill(a, r); };
  for (KvFormat format : {KvFormat::kV32, KvFormat::kModel1, KvFormat::kBF16}) {
    if (!only.empty() && only != "sparse-decode") break;
    add(verify_op(
        Op::kSparseDecode, kv_format_name(format), cases, seed,
        [&](uint64_t s) {
          return testing::make_sparse_decode_case(random_sparse_decode(format, s));
        },
        [&](const testing::SparseDecodeCase& c, const RunResult& ref) {
          return format == KvFormat::kBF16 ? CheckResult{} : fp8_vs_dequantised(c, ref);
        },
        decode));
  }
  const std::pair<KvFormat, DType> dense_kinds[] = {{KvFormat::kBF16, DType::kBF16},
                                                    {KvFormat::kBF16, DType::kF16},
                                                    {KvFormat::kV32, DType::kBF16},
                                                    {KvFormat::kModel1, DType::kBF16}};
  for (const auto& kind : dense_kinds) {
    if (!only.empty() && only != "dense-decode") break;
    const KvFormat format = kind.first;
    const DType dtype = kind.second;
    const bool fp16 = dtype == DType::kF16;
    add(verify_op(
        Op::kDenseDecode, fp16 ? "fp16" : kv_format_name(format), cases, seed,
        [&](uint64_t s) {
          return testing::make_dense_decode_case(random_dense_decode(format, dtype, s));
        },
        no_extra,
        [&](const RunResult& a, const RunResult& r) { return check_dense_decode(a, r, fp16); }));
  }
  if (only.empty() || only == "sparse-prefill") {
    add(verify_op(
        Op::kSparsePrefill, "bf16", cases, seed,
        [&](uint64_t s) { return testing::make_sparse_prefill_case(random_sparse_prefill(s)); },
        no_extra, prefill));
  }
  if (only.empty() || only == "indexer") {
    for (IndexerKeyFormat format : {IndexerKeyFormat::kFp8, IndexerKeyFormat::kFp4})
      add(verify_indexer(format, std::max(1, cases / 5), seed));
  }
  for (const char* block : {"compressor", "mhc", "engram"}) {
    if (!only.empty() && only != block) continue;
    const VerifyTally t = verify_v4_block(block, cases, seed);
    add({t.passed, t.failed, t.skipped});
  }
  std::printf("verify: %d passed, %d failed, %d skipped\n", total.passed, total.failed,
              total.skipped);
  return total.failed == 0 && total.passed > 0 ? 0 : 1;
}

}  // namespace

void add_verify(Command& root) {
  root.add_command("verify", "every op x format x kernel against the reference")
      .add_int("cases", 50, "random cases per op x format x kernel", 1, 1000000)
      .add_int("seed", 1, "seed of the case generator", 0)
      .add_choice("op", "all",
                  {"all", "sparse-decode", "dense-decode", "sparse-prefill", "indexer",
                   "compressor", "mhc", "engram"},
                  "only this op")
      .set_run(run_verify);
}

}  // namespace openmla::cli
