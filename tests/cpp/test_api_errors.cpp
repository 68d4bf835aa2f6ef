// Every class of bad argument to the attention ops returns a non-ok Status (never crashes, never
// writes) whose message names the offending argument. Each case mutates one field of a valid
// baseline call; the baseline itself is checked to succeed. KV-cache functions:
// test_api_errors_kv_cache.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "openmla/attention.h"
#include "openmla/kv_cache.h"
#include "support/test_support.h"

namespace {

using namespace openmla_test;
using openmla::Device;
using openmla::StatusCode;

const float kNaNf = std::numeric_limits<float>::quiet_NaN();
const float kInff = std::numeric_limits<float>::infinity();
constexpr int64_t k2p40 = int64_t{1} << 40;

struct Mutation {
  std::string what;
  std::string needle;
  StatusCode code;
};

// ---------------------------------------------------------------- sparse decode

struct SparseDecodeBase {
  std::vector<uint16_t> q = std::vector<uint16_t>(2 * 2 * 576, 0);
  std::vector<uint8_t> kv = std::vector<uint8_t>(2 * 3 * 656, 0);
  std::vector<uint8_t> extra_kv = std::vector<uint8_t>(2 * 656, 0);
  std::vector<int32_t> indices = {0, 1, -1, 2, 3, -1};
  std::vector<int32_t> topk_length = {2, 3};
  std::vector<int32_t> extra_indices = {0, -1, 1, 0};
  std::vector<int32_t> extra_topk_length = {1, 2};
  std::vector<float> sink = {0.0f, 1.0f};
  std::vector<uint16_t> out = std::vector<uint16_t>(2 * 2 * 512, 0);
  std::vector<float> lse = std::vector<float>(4, 0.0f);
  openmla::SparseDecodeArgs args;
  SparseDecodeBase() {
    args.q = contiguous_view(q.data(), DType::kBF16, {2, 1, 2, 576});
    args.kv_cache =
        openmla::make_strided_tensor(kv.data(), DType::kU8, {2, 2, 1, 656}, {3 * 656, 656, 656, 1});
    args.indices = contiguous_view(indices.data(), DType::kI32, {2, 1, 3});
    args.topk_length = contiguous_view(topk_length.data(), DType::kI32, {2});
    args.attn_sink = contiguous_view(sink.data(), DType::kF32, {2});
    args.out = contiguous_view(out.data(), DType::kBF16, {2, 1, 2, 512});
    args.lse = contiguous_view(lse.data(), DType::kF32, {2, 2, 1});
  }
  void add_extra() {
    args.extra_kv_cache = contiguous_view(extra_kv.data(), DType::kU8, {1, 2, 1, 656});
    args.extra_indices = contiguous_view(extra_indices.data(), DType::kI32, {2, 1, 2});
    args.extra_topk_length = contiguous_view(extra_topk_length.data(), DType::kI32, {2});
  }
};

void check_sparse_decode_mutation(const std::string& what, const std::string& needle,
                                  StatusCode code,
                                  const std::function<void(SparseDecodeBase&)>& mutate) {
  SCOPED_TRACE(what);
  SparseDecodeBase b;
  mutate(b);
  const std::vector<uint16_t> out_before = b.out;
  EXPECT_TRUE(Fails(openmla::sparse_decode(b.args), needle, code));
  openmla::Plan plan;
  EXPECT_TRUE(Fails(openmla::plan_sparse_decode(b.args, {}, &plan), needle, code));
  EXPECT_FALSE(plan.valid());
  EXPECT_EQ(b.out, out_before) << "a rejected call wrote its output";
}

TEST(ApiErrorsSparseDecode, BaselineAndExtraCacheBaselineSucceed) {
  SparseDecodeBase b;
  const Status st = openmla::sparse_decode(b.args);
  EXPECT_TRUE(st.ok()) << st.to_string();
  b.add_extra();
  const Status st2 = openmla::sparse_decode(b.args);
  EXPECT_TRUE(st2.ok()) << st2.to_string();
}

TEST(ApiErrorsSparseDecode, MissingRequiredTensorsAreNamed) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_decode_mutation("q", "q:", inv, [](B& b) { b.args.q = {}; });
  check_sparse_decode_mutation("kv_cache", "kv_cache", inv, [](B& b) { b.args.kv_cache = {}; });
  check_sparse_decode_mutation("indices", "indices", inv, [](B& b) { b.args.indices = {}; });
  check_sparse_decode_mutation("out", "out:", inv, [](B& b) { b.args.out = {}; });
  check_sparse_decode_mutation("lse", "lse:", inv, [](B& b) { b.args.lse = {}; });
}

TEST(ApiErrorsSparseDecode, WrongDtypesAreNamed) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kWrongDtype;
  check_sparse_decode_mutation("q fp16", "q:", StatusCode::kWrongDtype,
                               [](B& b) { b.args.q.dtype = DType::kF16; });
  check_sparse_decode_mutation("kv f32", "kv_cache", StatusCode::kWrongDtype,
                               [](B& b) { b.args.kv_cache.dtype = DType::kF32; });
  check_sparse_decode_mutation("indices i64", "indices", StatusCode::kWrongDtype,
                               [](B& b) { b.args.indices.dtype = DType::kI64; });
  check_sparse_decode_mutation("topk_length f32", "topk_length", inv,
                               [](B& b) { b.args.topk_length.dtype = DType::kF32; });
  check_sparse_decode_mutation("sink bf16", "attn_sink", StatusCode::kWrongDtype,
                               [](B& b) { b.args.attn_sink.dtype = DType::kBF16; });
  check_sparse_decode_mutation("out f32", "out:", StatusCode::kWrongDtype,
                               [](B& b) { b.args.out.dtype = DType::kF32; });
  check_sparse_decode_mutation("lse bf16", "lse:", StatusCode::kWrongDtype,
                               [](B& b) { b.args.lse.dtype = DType::kBF16; });
}

TEST(ApiErrorsSparseDecode, WrongRankIsNamed) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_decode_mutation("q 3-d", "q:", inv, [](B& b) { b.args.q.ndim = 3; });
  check_sparse_decode_mutation("kv 3-d", "kv_cache", inv, [](B& b) { b.args.kv_cache.ndim = 3; });
  check_sparse_decode_mutation("indices 2-d", "indices", inv,
                               [](B& b) { b.args.indices.ndim = 2; });
  check_sparse_decode_mutation("out 5-d", "out:", inv, [](B& b) {
    b.args.out.ndim = 5;
    b.args.out.shape[4] = 1;
    b.args.out.stride[4] = 1;
  });
  check_sparse_decode_mutation("lse 2-d", "lse:", inv, [](B& b) { b.args.lse.ndim = 2; });
  // A rank beyond kMaxDims must be reported, not read past the shape array.
  check_sparse_decode_mutation("q 7-d", "q:", inv, [](B& b) { b.args.q.ndim = 7; });
  check_sparse_decode_mutation("q 1000-d", "q:", inv, [](B& b) { b.args.q.ndim = 1000; });
  check_sparse_decode_mutation("q negative rank", "q:", inv, [](B& b) { b.args.q.ndim = -3; });
}

TEST(ApiErrorsSparseDecode, WrongShapeInEachDimensionIsNamed) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_decode_mutation("indices batch", "indices", inv,
                               [](B& b) { b.args.indices.shape[0] = 1; });
  check_sparse_decode_mutation("indices seq_q", "indices", inv,
                               [](B& b) { b.args.indices.shape[1] = 2; });
  for (int d = 0; d < 4; ++d)
    check_sparse_decode_mutation("out dim " + std::to_string(d), "out:", inv,
                                 [d](B& b) { b.args.out.shape[d] -= 1; });
  for (int d = 0; d < 3; ++d)
    check_sparse_decode_mutation("lse dim " + std::to_string(d), "lse:", inv,
                                 [d](B& b) { b.args.lse.shape[d] += 1; });
  check_sparse_decode_mutation("lse [b, s, h] instead of [b, h, s]", "lse:", inv, [](B& b) {
    b.args.lse.shape[1] = 1;
    b.args.lse.shape[2] = 2;
  });
  check_sparse_decode_mutation("kv bytes per token", "kv_cache", inv,
                               [](B& b) { b.args.kv_cache.shape[3] = 655; });
  check_sparse_decode_mutation("kv two heads", "kv_cache", inv,
                               [](B& b) { b.args.kv_cache.shape[2] = 2; });
  check_sparse_decode_mutation("topk_length length", "topk_length", inv,
                               [](B& b) { b.args.topk_length.shape[0] = 3; });
  check_sparse_decode_mutation("attn_sink length", "attn_sink", inv,
                               [](B& b) { b.args.attn_sink.shape[0] = 1; });
  check_sparse_decode_mutation("q heads 0", "q:", inv, [](B& b) { b.args.q.shape[2] = 0; });
}

TEST(ApiErrorsSparseDecode, NegativeSizesStridesAndNullPointersAreNamed) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_decode_mutation("q negative size", "q:", inv, [](B& b) { b.args.q.shape[0] = -1; });
  check_sparse_decode_mutation("indices negative topk", "indices", inv,
                               [](B& b) { b.args.indices.shape[2] = -1; });
  check_sparse_decode_mutation("q negative stride", "q:", inv,
                               [](B& b) { b.args.q.stride[0] = -576; });
  check_sparse_decode_mutation("indices negative stride", "indices", inv,
                               [](B& b) { b.args.indices.stride[1] = -3; });
  check_sparse_decode_mutation("lse negative stride", "lse:", inv,
                               [](B& b) { b.args.lse.stride[2] = -1; });
  check_sparse_decode_mutation("kv negative stride", "kv_cache", inv,
                               [](B& b) { b.args.kv_cache.stride[0] = -1968; });
  check_sparse_decode_mutation("q null", "q:", inv, [](B& b) { b.args.q.data = nullptr; });
  check_sparse_decode_mutation("kv null", "kv_cache", inv,
                               [](B& b) { b.args.kv_cache.data = nullptr; });
  check_sparse_decode_mutation("indices null", "indices", inv,
                               [](B& b) { b.args.indices.data = nullptr; });
  check_sparse_decode_mutation("topk_length null", "topk_length", inv,
                               [](B& b) { b.args.topk_length.data = nullptr; });
  check_sparse_decode_mutation("out null", "out:", inv, [](B& b) { b.args.out.data = nullptr; });
  check_sparse_decode_mutation("lse null", "lse:", inv, [](B& b) { b.args.lse.data = nullptr; });
}

TEST(ApiErrorsSparseDecode, NonContiguousLastDimIsRejectedWhereRequired) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_decode_mutation("q", "q:", inv, [](B& b) { b.args.q.stride[3] = 2; });
  check_sparse_decode_mutation("out", "out:", inv, [](B& b) { b.args.out.stride[3] = 2; });
  check_sparse_decode_mutation("kv", "kv_cache", inv, [](B& b) { b.args.kv_cache.stride[3] = 2; });
}

TEST(ApiErrorsSparseDecode, UnsupportedHeadDimsAreKUnsupported) {
  using B = SparseDecodeBase;
  check_sparse_decode_mutation("head_dim 128", "head_dim", StatusCode::kUnsupported,
                               [](B& b) { b.args.q.shape[3] = 128; });
  check_sparse_decode_mutation("head_dim_v 256", "head_dim_v", StatusCode::kUnsupported,
                               [](B& b) { b.args.head_dim_v = 256; });
  check_sparse_decode_mutation("head_dim_v 576", "head_dim_v", StatusCode::kUnsupported,
                               [](B& b) { b.args.head_dim_v = 576; });
  check_sparse_decode_mutation(
      "bf16 cache with two kv heads", "kv_cache", StatusCode::kUnsupported, [](B& b) {
        b.args.kv_cache = contiguous_view(b.kv.data(), DType::kBF16, {1, 1, 2, 576});
      });
}

TEST(ApiErrorsSparseDecode, Fp8CacheStridesAreChecked) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_decode_mutation("stride(1) != 656", "stride[1]", inv,
                               [](B& b) { b.args.kv_cache.stride[1] = 660; });
  check_sparse_decode_mutation("page stride below page bytes", "stride[0]", inv,
                               [](B& b) { b.args.kv_cache.stride[0] = 2 * 656 - 1; });
  check_sparse_decode_mutation("MODEL1 view for a 576 query", "kv_cache", inv,
                               [](B& b) { b.args.kv_cache.shape[3] = 584; });
}

TEST(ApiErrorsSparseDecode, ExtraCacheArgumentsMustComeTogether) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_decode_mutation("extra cache without indices", "extra_indices", inv, [](B& b) {
    b.add_extra();
    b.args.extra_indices = {};
    b.args.extra_topk_length = {};
  });
  check_sparse_decode_mutation("extra indices without cache", "extra_indices", inv, [](B& b) {
    b.add_extra();
    b.args.extra_kv_cache = {};
    b.args.extra_topk_length = {};
  });
  check_sparse_decode_mutation("extra lengths without cache", "extra_topk_length", inv, [](B& b) {
    b.add_extra();
    b.args.extra_kv_cache = {};
    b.args.extra_indices = {};
  });
  check_sparse_decode_mutation("extra cache of another format", "extra_kv_cache", inv, [](B& b) {
    b.add_extra();
    b.args.extra_kv_cache = contiguous_view(b.extra_kv.data(), DType::kBF16, {1, 1, 1, 576});
  });
  check_sparse_decode_mutation("extra indices batch", "extra_indices", inv, [](B& b) {
    b.add_extra();
    b.args.extra_indices.shape[0] = 1;
  });
}

TEST(ApiErrorsSparseDecode, TopkLengthValuesOutsideZeroToTopkAreRejected) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_decode_mutation("negative", "topk_length", inv, [](B& b) { b.topk_length[1] = -1; });
  check_sparse_decode_mutation("above topk", "topk_length", inv,
                               [](B& b) { b.topk_length[0] = 4; });
  check_sparse_decode_mutation("extra above extra_topk", "extra_topk_length", inv, [](B& b) {
    b.add_extra();
    b.extra_topk_length[1] = 3;
  });
  check_sparse_decode_mutation("extra negative", "extra_topk_length", inv, [](B& b) {
    b.add_extra();
    b.extra_topk_length[0] = INT32_MIN;
  });
}

TEST(ApiErrorsSparseDecode, ByteSizeOverflowingInt64IsRejected) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_decode_mutation("q 2^40 x 2^40", "q:", inv, [](B& b) {
    b.args.q = openmla::make_strided_tensor(b.q.data(), DType::kBF16, {k2p40, k2p40, 2, 576},
                                            {k2p40 * 1152, 1152, 576, 1});
  });
  check_sparse_decode_mutation("q extent exactly INT64_MAX elements", "q:", inv, [](B& b) {
    b.args.q.shape[0] = 2;
    b.args.q.stride[0] = std::numeric_limits<int64_t>::max() - 1151;  // max offset = INT64_MAX
  });
  check_sparse_decode_mutation("indices huge stride", "indices", inv, [](B& b) {
    b.args.indices.stride[0] = std::numeric_limits<int64_t>::max() / 2;
  });
  check_sparse_decode_mutation("kv huge page count", "kv_cache", inv,
                               [](B& b) { b.args.kv_cache.shape[0] = int64_t{1} << 62; });
}

TEST(ApiErrorsSparseDecode, InvalidSoftmaxScaleIsRejected) {
  using B = SparseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  for (float s : {kNaNf, -kNaNf, -0.5f, kInff, -kInff})
    check_sparse_decode_mutation("scale " + std::to_string(s), "softmax_scale", inv,
                                 [s](B& b) { b.args.softmax_scale = s; });
}

TEST(ApiErrorsSparseDecode, CudaTensorsAreKUnsupported) {
  using B = SparseDecodeBase;
  const StatusCode un = StatusCode::kUnsupported;
  check_sparse_decode_mutation("q", "q:", un, [](B& b) { b.args.q.device = Device::kCuda; });
  check_sparse_decode_mutation("kv", "kv_cache", un,
                               [](B& b) { b.args.kv_cache.device = Device::kCuda; });
  check_sparse_decode_mutation("indices", "indices", un,
                               [](B& b) { b.args.indices.device = Device::kCuda; });
  check_sparse_decode_mutation("out", "out:", un, [](B& b) { b.args.out.device = Device::kCuda; });
}

TEST(ApiErrorsSparseDecode, ForcingAnUnknownOrForeignKernelFails) {
  SparseDecodeBase b;
  openmla::Options o;
  o.kernel = "sparse_decode.no_such_kernel";
  EXPECT_TRUE(Fails(openmla::sparse_decode(b.args, o), "sparse_decode.no_such_kernel"));
  o.kernel = "dense_decode.ref";  // registered, but for another op
  EXPECT_TRUE(Fails(openmla::sparse_decode(b.args, o), "dense_decode.ref"));
  openmla::Plan plan;
  EXPECT_TRUE(Fails(openmla::plan_sparse_decode(b.args, o, &plan), "dense_decode.ref"));
  o.kernel = "sparse_decode.ref";
  const Status st = openmla::sparse_decode(b.args, o);
  EXPECT_TRUE(st.ok()) << st.to_string();
  // Every kernel the registry lists for this op can be forced by name or is refused as unsupported.
  std::vector<openmla::KernelInfo> infos(openmla::list_kernels(nullptr, 0));
  openmla::list_kernels(infos.data(), infos.size());
  for (const auto& k : infos) {
    if (k.op != openmla::Op::kSparseDecode) continue;
    o.kernel = k.name;
    const Status s = openmla::sparse_decode(b.args, o);
    if (k.runnable) {
      EXPECT_TRUE(s.ok() || s.code() == StatusCode::kUnsupported)
          << k.name << ": " << s.to_string();
    } else {
      EXPECT_EQ(s.code(), StatusCode::kUnsupported) << k.name << ": " << s.to_string();
      EXPECT_NE(s.message().find(k.name), std::string::npos) << s.message();
    }
  }
}

TEST(ApiErrorsSparseDecode, RunWithAPlanForOtherShapesOrAnotherOpFails) {
  SparseDecodeBase b;
  openmla::Plan plan;
  ASSERT_TRUE(openmla::plan_sparse_decode(b.args, {}, &plan).ok());
  EXPECT_TRUE(openmla::run_sparse_decode(plan, b.args).ok());
  SparseDecodeBase other;
  other.args.indices.shape[2] = 2;  // topk 3 -> 2
  other.topk_length = {1, 2};
  EXPECT_TRUE(Fails(openmla::run_sparse_decode(plan, other.args), "plan"));
  SparseDecodeBase with_extra;
  with_extra.add_extra();
  EXPECT_TRUE(Fails(openmla::run_sparse_decode(plan, with_extra.args), "plan"));
  EXPECT_TRUE(Fails(openmla::run_sparse_decode(openmla::Plan{}, b.args), "plan"));
  EXPECT_TRUE(Fails(openmla::plan_sparse_decode(b.args, {}, nullptr), "plan"));
}

// ---------------------------------------------------------------- dense decode

struct DenseDecodeBase {
  // bf16 cache: 3 pages of 4 tokens, 2 kv heads; request 0 uses pages {0, 1}, request 1 page {2}.
  std::vector<uint16_t> q = std::vector<uint16_t>(2 * 2 * 4 * 576, 0);
  std::vector<uint16_t> kv = std::vector<uint16_t>(3 * 4 * 2 * 576, 0);
  std::vector<int32_t> block_table = {0, 1, 2, kGarbageBlock};
  std::vector<int32_t> seqlens = {5, 3};
  std::vector<uint16_t> out = std::vector<uint16_t>(2 * 2 * 4 * 512, 0);
  std::vector<float> lse = std::vector<float>(2 * 4 * 2, 0.0f);
  openmla::DenseDecodeArgs args;
  DenseDecodeBase() {
    args.q = contiguous_view(q.data(), DType::kBF16, {2, 2, 4, 576});
    args.kv_cache = contiguous_view(kv.data(), DType::kBF16, {3, 4, 2, 576});
    args.block_table = contiguous_view(block_table.data(), DType::kI32, {2, 2});
    args.cache_seqlens = contiguous_view(seqlens.data(), DType::kI32, {2});
    args.causal = true;
    args.out = contiguous_view(out.data(), DType::kBF16, {2, 2, 4, 512});
    args.lse = contiguous_view(lse.data(), DType::kF32, {2, 4, 2});
  }
};

void check_dense_decode_mutation(const std::string& what, const std::string& needle,
                                 StatusCode code,
                                 const std::function<void(DenseDecodeBase&)>& mutate) {
  SCOPED_TRACE(what);
  DenseDecodeBase b;
  mutate(b);
  const std::vector<uint16_t> out_before = b.out;
  EXPECT_TRUE(Fails(openmla::dense_decode(b.args), needle, code));
  openmla::Plan plan;
  EXPECT_TRUE(Fails(openmla::plan_dense_decode(b.args, {}, &plan), needle, code));
  EXPECT_EQ(b.out, out_before);
}

TEST(ApiErrorsDenseDecode, BaselineWithGarbageInUnusedBlockTableEntriesSucceeds) {
  DenseDecodeBase b;
  const Status st = openmla::dense_decode(b.args);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(ApiErrorsDenseDecode, BadArgumentsAreNamed) {
  using B = DenseDecodeBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_dense_decode_mutation("missing block_table", "block_table", inv,
                              [](B& b) { b.args.block_table = {}; });
  check_dense_decode_mutation("missing cache_seqlens", "cache_seqlens", inv,
                              [](B& b) { b.args.cache_seqlens = {}; });
  check_dense_decode_mutation("missing kv", "kv_cache", inv, [](B& b) { b.args.kv_cache = {}; });
  check_dense_decode_mutation("block_table i64", "block_table", StatusCode::kWrongDtype,
                              [](B& b) { b.args.block_table.dtype = DType::kI64; });
  check_dense_decode_mutation("seqlens f32", "cache_seqlens", StatusCode::kWrongDtype,
                              [](B& b) { b.args.cache_seqlens.dtype = DType::kF32; });
  check_dense_decode_mutation("kv fp16", "kv_cache", StatusCode::kWrongDtype,
                              [](B& b) { b.args.kv_cache.dtype = DType::kF16; });
  check_dense_decode_mutation("block_table batch", "block_table", inv,
                              [](B& b) { b.args.block_table.shape[0] = 1; });
  check_dense_decode_mutation("seqlens batch", "cache_seqlens", inv,
                              [](B& b) { b.args.cache_seqlens.shape[0] = 3; });
  check_dense_decode_mutation("kv head_dim", "kv_cache", inv,
                              [](B& b) { b.args.kv_cache.shape[3] = 512; });
  check_dense_decode_mutation("kv 0 heads", "kv_cache", inv,
                              [](B& b) { b.args.kv_cache.shape[2] = 0; });
  check_dense_decode_mutation("heads_kv 3 does not divide 4", "heads_kv", inv, [](B& b) {
    b.args.kv_cache = contiguous_view(b.kv.data(), DType::kBF16, {2, 4, 3, 576});
  });
  check_dense_decode_mutation("seqlens beyond capacity", "cache_seqlens", inv,
                              [](B& b) { b.seqlens[0] = 9; });
  check_dense_decode_mutation("negative seqlens", "cache_seqlens", inv,
                              [](B& b) { b.seqlens[1] = -1; });
  check_dense_decode_mutation("used entry past the cache", "block_table", inv,
                              [](B& b) { b.block_table[1] = 3; });
  check_dense_decode_mutation("used entry negative", "block_table", inv,
                              [](B& b) { b.block_table[2] = -1; });
  check_dense_decode_mutation("used entry garbage", "block_table", inv,
                              [](B& b) { b.block_table[0] = kGarbageBlock; });
  check_dense_decode_mutation("lse shape", "lse:", inv, [](B& b) { b.args.lse.shape[2] = 1; });
  check_dense_decode_mutation("out heads", "out:", inv, [](B& b) { b.args.out.shape[2] = 2; });
  check_dense_decode_mutation("scale NaN", "softmax_scale", inv,
                              [](B& b) { b.args.softmax_scale = kNaNf; });
  check_dense_decode_mutation("scale negative", "softmax_scale", inv,
                              [](B& b) { b.args.softmax_scale = -1.0f; });
  check_dense_decode_mutation("head_dim 128", "head_dim", StatusCode::kUnsupported,
                              [](B& b) { b.args.q.shape[3] = 128; });
  check_dense_decode_mutation("head_dim_v", "head_dim_v", StatusCode::kUnsupported,
                              [](B& b) { b.args.head_dim_v = 576; });
  check_dense_decode_mutation("cuda kv", "kv_cache", StatusCode::kUnsupported,
                              [](B& b) { b.args.kv_cache.device = Device::kCuda; });
  check_dense_decode_mutation("cuda block_table", "block_table", StatusCode::kUnsupported,
                              [](B& b) { b.args.block_table.device = Device::kCuda; });
  check_dense_decode_mutation("block_table null", "block_table", inv,
                              [](B& b) { b.args.block_table.data = nullptr; });
  check_dense_decode_mutation("kv overflow", "kv_cache", inv, [](B& b) {
    b.args.kv_cache = openmla::make_strided_tensor(
        b.kv.data(), DType::kBF16, {k2p40, k2p40, 2, 576}, {k2p40 * 1152, 1152, 576, 1});
  });
}

void make_fp16(DenseDecodeBase& b) {
  b.args.q.dtype = DType::kF16;
  b.args.kv_cache.dtype = DType::kF16;
  b.args.out.dtype = DType::kF16;
}

TEST(ApiErrorsDenseDecode, Fp16QueryCacheAndOutSucceed) {
  DenseDecodeBase b;
  make_fp16(b);
  const Status st = openmla::dense_decode(b.args);
  EXPECT_TRUE(st.ok()) << st.to_string();
  DenseDecodeBase fp8;  // the FP8 cache of MixedDtypesAreNamed works with bf16 q
  fp8.args.kv_cache =
      contiguous_view(reinterpret_cast<uint8_t*>(fp8.kv.data()), DType::kU8, {3, 4, 1, 656});
  const Status st8 = openmla::dense_decode(fp8.args);
  EXPECT_TRUE(st8.ok()) << st8.to_string();
}

TEST(ApiErrorsDenseDecode, MixedDtypesAreNamed) {
  using B = DenseDecodeBase;
  const StatusCode wrong = StatusCode::kWrongDtype;
  check_dense_decode_mutation("fp16 q, bf16 cache", "kv_cache: expected dtype float16", wrong,
                              [](B& b) {
                                b.args.q.dtype = DType::kF16;
                                b.args.out.dtype = DType::kF16;
                              });
  check_dense_decode_mutation("bf16 q, fp16 cache", "kv_cache: expected dtype bfloat16", wrong,
                              [](B& b) { b.args.kv_cache.dtype = DType::kF16; });
  check_dense_decode_mutation("fp16 q and cache, bf16 out", "out: expected dtype float16", wrong,
                              [](B& b) {
                                make_fp16(b);
                                b.args.out.dtype = DType::kBF16;
                              });
  check_dense_decode_mutation("bf16 q and cache, fp16 out", "out: expected dtype bfloat16", wrong,
                              [](B& b) { b.args.out.dtype = DType::kF16; });
  check_dense_decode_mutation("fp32 q", "q:", wrong, [](B& b) { b.args.q.dtype = DType::kF32; });
  check_dense_decode_mutation("fp16 lse", "lse:", wrong, [](B& b) {
    make_fp16(b);
    b.args.lse.dtype = DType::kF16;
  });
  check_dense_decode_mutation(
      "fp16 q, FP8 cache", "q: float16 q needs a float16 kv_cache", wrong, [](B& b) {
        make_fp16(b);
        b.args.kv_cache =
            contiguous_view(reinterpret_cast<uint8_t*>(b.kv.data()), DType::kU8, {3, 4, 1, 656});
      });
}

TEST(ApiErrorsDenseDecode, EmptyCacheWithZeroPageSizeIsRejectedNotDividedBy) {
  DenseDecodeBase b;
  b.seqlens = {0, 0};
  b.args.kv_cache = contiguous_view(b.kv.data(), DType::kBF16, {0, 0, 2, 576});
  EXPECT_TRUE(Fails(openmla::dense_decode(b.args), "page_size"));
  openmla::Plan plan;
  EXPECT_TRUE(Fails(openmla::plan_dense_decode(b.args, {}, &plan), "page_size"));
}

TEST(ApiErrorsDenseDecode, PlanFromAnotherOpOrOtherShapesIsRejected) {
  DenseDecodeBase d;
  SparseDecodeBase s;
  openmla::Plan sparse_plan, dense_plan;
  ASSERT_TRUE(openmla::plan_sparse_decode(s.args, {}, &sparse_plan).ok());
  EXPECT_TRUE(Fails(openmla::run_dense_decode(sparse_plan, d.args), "plan"));
  ASSERT_TRUE(openmla::plan_dense_decode(d.args, {}, &dense_plan).ok());
  EXPECT_TRUE(openmla::run_dense_decode(dense_plan, d.args).ok());
  EXPECT_TRUE(Fails(openmla::run_sparse_decode(dense_plan, s.args), "plan"));
  DenseDecodeBase other;
  other.args.causal = false;
  EXPECT_TRUE(Fails(openmla::run_dense_decode(dense_plan, other.args), "plan"));
  openmla::Options o;
  o.kernel = "sparse_decode.ref";
  EXPECT_TRUE(Fails(openmla::dense_decode(d.args, o), "sparse_decode.ref"));
}

// ---------------------------------------------------------------- sparse prefill

struct SparsePrefillBase {
  std::vector<uint16_t> q = std::vector<uint16_t>(3 * 4 * 512, 0);
  std::vector<uint16_t> kv = std::vector<uint16_t>(5 * 2 * 512, 0);
  std::vector<int32_t> indices = std::vector<int32_t>(3 * 2 * 4, 1);
  std::vector<int32_t> topk_length = {4, 0, 2};
  std::vector<float> sink = {0.0f, 1.0f, -1.0f, 2.0f};
  std::vector<uint16_t> out = std::vector<uint16_t>(3 * 4 * 512, 0);
  std::vector<float> max_logits = std::vector<float>(12, 0.0f);
  std::vector<float> lse = std::vector<float>(12, 0.0f);
  openmla::SparsePrefillArgs args;
  SparsePrefillBase() {
    args.q = contiguous_view(q.data(), DType::kBF16, {3, 4, 512});
    args.kv = contiguous_view(kv.data(), DType::kBF16, {5, 2, 512});
    args.indices = contiguous_view(indices.data(), DType::kI32, {3, 2, 4});
    args.topk_length = contiguous_view(topk_length.data(), DType::kI32, {3});
    args.attn_sink = contiguous_view(sink.data(), DType::kF32, {4});
    args.softmax_scale = 0.5f;
    args.out = contiguous_view(out.data(), DType::kBF16, {3, 4, 512});
    args.max_logits = contiguous_view(max_logits.data(), DType::kF32, {3, 4});
    args.lse = contiguous_view(lse.data(), DType::kF32, {3, 4});
  }
};

void check_sparse_prefill_mutation(const std::string& what, const std::string& needle,
                                   StatusCode code,
                                   const std::function<void(SparsePrefillBase&)>& mutate) {
  SCOPED_TRACE(what);
  SparsePrefillBase b;
  mutate(b);
  const std::vector<uint16_t> out_before = b.out;
  EXPECT_TRUE(Fails(openmla::sparse_prefill(b.args), needle, code));
  openmla::Plan plan;
  EXPECT_TRUE(Fails(openmla::plan_sparse_prefill(b.args, {}, &plan), needle, code));
  EXPECT_EQ(b.out, out_before);
}

TEST(ApiErrorsSparsePrefill, BaselineSucceeds) {
  SparsePrefillBase b;
  const Status st = openmla::sparse_prefill(b.args);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(ApiErrorsSparsePrefill, BadArgumentsAreNamed) {
  using B = SparsePrefillBase;
  const StatusCode inv = StatusCode::kInvalidArgument;
  check_sparse_prefill_mutation("scale 0 (required)", "softmax_scale", inv,
                                [](B& b) { b.args.softmax_scale = 0.0f; });
  check_sparse_prefill_mutation("scale NaN", "softmax_scale", inv,
                                [](B& b) { b.args.softmax_scale = kNaNf; });
  check_sparse_prefill_mutation("scale negative", "softmax_scale", inv,
                                [](B& b) { b.args.softmax_scale = -0.5f; });
  check_sparse_prefill_mutation("missing kv", "kv:", inv, [](B& b) { b.args.kv = {}; });
  check_sparse_prefill_mutation("missing indices", "indices", inv,
                                [](B& b) { b.args.indices = {}; });
  check_sparse_prefill_mutation("missing max_logits", "max_logits", inv,
                                [](B& b) { b.args.max_logits = {}; });
  check_sparse_prefill_mutation("kv fp16", "kv:", StatusCode::kWrongDtype,
                                [](B& b) { b.args.kv.dtype = DType::kF16; });
  check_sparse_prefill_mutation("kv head_dim", "kv:", inv, [](B& b) { b.args.kv.shape[2] = 576; });
  check_sparse_prefill_mutation("kv 2-d", "kv:", inv, [](B& b) { b.args.kv.ndim = 2; });
  check_sparse_prefill_mutation("heads_kv 3", "heads_kv", inv, [](B& b) {
    b.args.kv = contiguous_view(b.kv.data(), DType::kBF16, {3, 3, 512});
  });
  check_sparse_prefill_mutation("heads_kv 0", "heads_kv", inv,
                                [](B& b) { b.args.kv.shape[1] = 0; });
  check_sparse_prefill_mutation("indices heads_kv", "indices", inv,
                                [](B& b) { b.args.indices.shape[1] = 1; });
  check_sparse_prefill_mutation("indices seq_q", "indices", inv,
                                [](B& b) { b.args.indices.shape[0] = 2; });
  check_sparse_prefill_mutation("topk_length above topk", "topk_length", inv,
                                [](B& b) { b.topk_length[2] = 5; });
  check_sparse_prefill_mutation("topk_length negative", "topk_length", inv,
                                [](B& b) { b.topk_length[0] = -2; });
  check_sparse_prefill_mutation("topk_length 2-d", "topk_length", inv, [](B& b) {
    b.args.topk_length = contiguous_view(b.topk_length.data(), DType::kI32, {3, 1});
  });
  check_sparse_prefill_mutation("sink length", "attn_sink", inv,
                                [](B& b) { b.args.attn_sink.shape[0] = 2; });
  check_sparse_prefill_mutation("out head_dim_v", "out:", inv,
                                [](B& b) { b.args.out.shape[2] = 448; });
  check_sparse_prefill_mutation("max_logits shape", "max_logits", inv,
                                [](B& b) { b.args.max_logits.shape[1] = 2; });
  check_sparse_prefill_mutation("lse shape", "lse:", inv, [](B& b) { b.args.lse.shape[0] = 4; });
  check_sparse_prefill_mutation("kv non-contiguous last dim", "kv:", inv,
                                [](B& b) { b.args.kv.stride[2] = 3; });
  check_sparse_prefill_mutation("q null", "q:", inv, [](B& b) { b.args.q.data = nullptr; });
  check_sparse_prefill_mutation("head_dim 128", "head_dim", StatusCode::kUnsupported,
                                [](B& b) { b.args.q.shape[2] = 128; });
  check_sparse_prefill_mutation("head_dim_v", "head_dim_v", StatusCode::kUnsupported,
                                [](B& b) { b.args.head_dim_v = 128; });
  check_sparse_prefill_mutation("cuda kv", "kv:", StatusCode::kUnsupported,
                                [](B& b) { b.args.kv.device = Device::kCuda; });
  check_sparse_prefill_mutation("cuda lse", "lse:", StatusCode::kUnsupported,
                                [](B& b) { b.args.lse.device = Device::kCuda; });
  check_sparse_prefill_mutation("kv overflow", "kv:", inv, [](B& b) {
    b.args.kv = openmla::make_strided_tensor(b.kv.data(), DType::kBF16, {k2p40, k2p40, 512},
                                             {k2p40 * 512, 512, 1});
  });
}

TEST(ApiErrorsSparsePrefill, PlanMismatchAndUnknownKernelAreRejected) {
  SparsePrefillBase b;
  openmla::Plan plan;
  ASSERT_TRUE(openmla::plan_sparse_prefill(b.args, {}, &plan).ok());
  EXPECT_TRUE(openmla::run_sparse_prefill(plan, b.args).ok());
  SparsePrefillBase other;
  other.args.attn_sink = {};
  EXPECT_TRUE(Fails(openmla::run_sparse_prefill(plan, other.args), "plan"));
  DenseDecodeBase d;
  openmla::Plan dense_plan;
  ASSERT_TRUE(openmla::plan_dense_decode(d.args, {}, &dense_plan).ok());
  EXPECT_TRUE(Fails(openmla::run_sparse_prefill(dense_plan, b.args), "plan"));
  openmla::Options o;
  o.kernel = "bogus";
  EXPECT_TRUE(Fails(openmla::sparse_prefill(b.args, o), "bogus"));
}

}  // namespace
