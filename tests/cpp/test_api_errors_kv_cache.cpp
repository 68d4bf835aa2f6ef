// Bad arguments to the KV-cache functions of the public API (page sizes, quantise / dequantise,
// write tokens, index conversion) return a non-ok Status whose message names the argument.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "openmla/kv_cache.h"
#include "support/test_support.h"

namespace {

using namespace openmla_test;
using openmla::Device;
using openmla::StatusCode;

TEST(ApiErrorsKvCache, PageBytesRejectsSizesWhoseByteCountOverflows) {
  int64_t bytes = 0;
  EXPECT_FALSE(
      openmla::kv_page_bytes(KvFormat::kBF16, int64_t{1} << 31, int64_t{1} << 40, 65536, &bytes)
          .ok());
  EXPECT_FALSE(
      openmla::kv_page_bytes(KvFormat::kBF16, int64_t{1} << 31, int64_t{1} << 40, 1, &bytes).ok());
  EXPECT_FALSE(openmla::kv_page_bytes(KvFormat::kV32, 64, 576, 1, nullptr).ok());
  EXPECT_FALSE(openmla::kv_page_bytes(KvFormat::kV32, -1, 576, 1, &bytes).ok());
  EXPECT_TRUE(Fails(openmla::kv_page_bytes(KvFormat::kModel1, 64, 512, 0, &bytes), "heads_kv"));
  KvFormat f;
  EXPECT_TRUE(
      Fails(openmla::fp8_format_for_head_dim(128, &f), "head_dim", StatusCode::kUnsupported));
}

TEST(ApiErrorsKvCache, QuantiseAndDequantiseNameTheBadArgument) {
  std::vector<uint16_t> lat(2 * 2 * 576, 0);
  std::vector<uint8_t> cache(2 * 2 * 656, 0);
  const TensorView src = contiguous_view(lat.data(), DType::kBF16, {2, 2, 1, 576});
  const TensorView dst = contiguous_view(cache.data(), DType::kU8, {2, 2, 1, 656});
  ASSERT_TRUE(openmla::quantize_kv_cache(src, KvFormat::kV32, dst).ok());
  EXPECT_TRUE(Fails(openmla::quantize_kv_cache(src, KvFormat::kBF16, dst), "format"));
  EXPECT_TRUE(Fails(openmla::quantize_kv_cache(src, KvFormat::kModel1, dst), "dst"));
  TensorView bad = src;
  bad.shape[0] = 1;
  EXPECT_TRUE(Fails(openmla::quantize_kv_cache(bad, KvFormat::kV32, dst), "src"));
  bad = src;
  bad.dtype = DType::kF32;
  EXPECT_TRUE(
      Fails(openmla::quantize_kv_cache(bad, KvFormat::kV32, dst), "src", StatusCode::kWrongDtype));
  TensorView bad_dst = dst;
  bad_dst.stride[1] = 700;
  EXPECT_TRUE(Fails(openmla::quantize_kv_cache(src, KvFormat::kV32, bad_dst), "dst"));
  bad_dst = dst;
  bad_dst.data = nullptr;
  EXPECT_TRUE(Fails(openmla::quantize_kv_cache(src, KvFormat::kV32, bad_dst), "dst"));
  EXPECT_TRUE(Fails(openmla::dequantize_kv_cache(dst, KvFormat::kV32, bad), "dst",
                    StatusCode::kWrongDtype));
  EXPECT_TRUE(Fails(openmla::dequantize_kv_cache(dst, KvFormat::kBF16, src), "format"));
  TensorView cuda = src;
  cuda.device = Device::kCuda;
  EXPECT_TRUE(Fails(openmla::dequantize_kv_cache(dst, KvFormat::kV32, cuda), "dst",
                    StatusCode::kUnsupported));
}

TEST(ApiErrorsKvCache, WriteTokensNamesTheBadArgument) {
  std::vector<uint16_t> lat(2 * 576, 0);
  std::vector<uint8_t> cache(2 * 2 * 656, 0);
  std::vector<int32_t> slots = {0, 3};
  const TensorView l = contiguous_view(lat.data(), DType::kBF16, {2, 576});
  const TensorView s = contiguous_view(slots.data(), DType::kI32, {2});
  const TensorView c = contiguous_view(cache.data(), DType::kU8, {2, 2, 1, 656});
  ASSERT_TRUE(openmla::write_kv_tokens(l, s, KvFormat::kV32, c).ok());
  TensorView bad = l;
  bad.shape[1] = 512;
  EXPECT_TRUE(Fails(openmla::write_kv_tokens(bad, s, KvFormat::kV32, c), "latents"));
  bad = l;
  bad.dtype = DType::kF16;
  EXPECT_TRUE(Fails(openmla::write_kv_tokens(bad, s, KvFormat::kV32, c), "latents",
                    StatusCode::kWrongDtype));
  TensorView bs = s;
  bs.shape[0] = 1;
  EXPECT_TRUE(Fails(openmla::write_kv_tokens(l, bs, KvFormat::kV32, c), "slot_mapping"));
  bs = s;
  bs.dtype = DType::kF32;
  EXPECT_TRUE(Fails(openmla::write_kv_tokens(l, bs, KvFormat::kV32, c), "slot_mapping",
                    StatusCode::kWrongDtype));
  EXPECT_TRUE(Fails(openmla::write_kv_tokens(l, s, KvFormat::kModel1, c), "cache"));
  std::vector<uint16_t> two_heads(2 * 2 * 2 * 576, 0);
  EXPECT_TRUE(Fails(
      openmla::write_kv_tokens(l, s, KvFormat::kBF16,
                               contiguous_view(two_heads.data(), DType::kBF16, {2, 2, 2, 576})),
      "cache", StatusCode::kUnsupported));
}

TEST(ApiErrorsKvCache, AbsIndicesConversionNamesTheBadArgument) {
  std::vector<int32_t> abs = {0, 1, 2, 3}, bt = {0, 1}, out(4, 0);
  const TensorView a = contiguous_view(abs.data(), DType::kI32, {1, 1, 4});
  const TensorView t = contiguous_view(bt.data(), DType::kI32, {1, 2});
  const TensorView o = contiguous_view(out.data(), DType::kI32, {1, 1, 4});
  ASSERT_TRUE(openmla::abs_indices_to_cache_indices(a, t, 2, o).ok());
  EXPECT_TRUE(Fails(openmla::abs_indices_to_cache_indices(a, t, 0, o), "page_size"));
  EXPECT_TRUE(Fails(openmla::abs_indices_to_cache_indices(a, t, -4, o), "page_size"));
  TensorView bt2 = t;
  bt2.shape[0] = 2;
  EXPECT_TRUE(Fails(openmla::abs_indices_to_cache_indices(a, bt2, 2, o), "block_table"));
  TensorView o2 = o;
  o2.shape[2] = 3;
  EXPECT_TRUE(Fails(openmla::abs_indices_to_cache_indices(a, t, 2, o2), "out"));
  TensorView a2 = a;
  a2.dtype = DType::kI64;
  EXPECT_TRUE(Fails(openmla::abs_indices_to_cache_indices(a2, t, 2, o), "abs_indices",
                    StatusCode::kWrongDtype));
}

}  // namespace
