// KV compressor: every class of bad argument to compressor_save_states, compressor_store and
// compressor_rope_table returns a non-ok Status naming the argument (kWrongDtype for dtypes) and
// writes nothing. Each case mutates one field of a valid baseline call (a CSA step at position 3,
// which emits entry 0), and the baseline itself is checked to succeed.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "openmla/compressor.h"
#include "support/test_support.h"

namespace {

using namespace openmla_test;
using openmla::StatusCode;

constexpr int64_t kWidth = 1024;  // CSA: 2 x 512

struct Base {
  std::vector<float> a = std::vector<float>(kWidth, 0.5f), z = std::vector<float>(kWidth, 0.0f);
  std::vector<float> ape = std::vector<float>(4 * kWidth, 0.0f);
  std::vector<float> state = std::vector<float>(2 * 4 * 2 * kWidth, 0.25f);  // 2 blocks of 4
  std::vector<float> weight = std::vector<float>(512, 1.0f);
  std::vector<float> cos_sin = std::vector<float>(8 * 64, 0.0f);
  std::vector<uint8_t> kv = std::vector<uint8_t>(2 * 576 * 2, 0);  // 2 pages of 1 token (padded)
  std::vector<int64_t> pos = {3}, slot = {3}, kv_slot = {1};
  std::vector<int64_t> gather = {-1, -1, -1, -1, 0, 1, 2, 3};
  openmla::CompressorSaveStatesArgs save;
  openmla::CompressorStoreArgs store;
  Base() {
    save.kv = contiguous_view(a.data(), DType::kF32, {1, kWidth});
    save.score = contiguous_view(z.data(), DType::kF32, {1, kWidth});
    save.ape = contiguous_view(ape.data(), DType::kF32, {4, kWidth});
    save.positions = contiguous_view(pos.data(), DType::kI64, {1});
    save.state_cache = contiguous_view(state.data(), DType::kF32, {2, 4, 2 * kWidth});
    save.slot_mapping = contiguous_view(slot.data(), DType::kI64, {1});
    store.state_cache = save.state_cache;
    store.gather_slots = contiguous_view(gather.data(), DType::kI64, {1, 8});
    store.positions = save.positions;
    store.kv_slot_mapping = contiguous_view(kv_slot.data(), DType::kI64, {1});
    store.rms_norm_weight = contiguous_view(weight.data(), DType::kF32, {512});
    store.cos_sin_cache = contiguous_view(cos_sin.data(), DType::kF32, {8, 64});
    store.kv_cache =
        openmla::make_strided_tensor(kv.data(), DType::kU8, {2, 1, 1, 584}, {1152, 584, 584, 1});
    for (int i = 0; i < 8; ++i) cos_sin[i * 64 + (i % 32)] = 1.0f;
  }
};

struct Mutation {
  std::string what, needle;
  StatusCode code;
  std::function<void(Base&)> apply;
};

TEST(CompressorErrors, BaselineSucceeds) {
  Base b;
  const Status s1 = openmla::compressor_save_states(b.save);
  EXPECT_TRUE(s1.ok()) << s1.to_string();
  const Status s2 = openmla::compressor_store(b.store);
  EXPECT_TRUE(s2.ok()) << s2.to_string();
  EXPECT_NE(b.kv[1152], 0);  // entry 0 written into slot 1 (page 1)
}

TEST(CompressorErrors, SaveStatesNamesTheArgument) {
  const StatusCode kInv = StatusCode::kInvalidArgument, kDt = StatusCode::kWrongDtype;
  const std::vector<Mutation> cases = {
      {"kv dtype", "kv", kDt, [](Base& b) { b.save.kv.dtype = DType::kBF16; }},
      {"kv width", "kv", kInv, [](Base& b) { b.save.kv.shape[1] = 512; }},
      {"score rows", "score", kInv, [](Base& b) { b.save.score.shape[0] = 2; }},
      {"score dtype", "score", kDt, [](Base& b) { b.save.score.dtype = DType::kF16; }},
      {"ape ratio", "ape", kInv, [](Base& b) { b.save.ape.shape[0] = 3; }},
      {"ape missing", "ape", kInv, [](Base& b) { b.save.ape = TensorView(); }},
      {"positions dtype", "positions", kDt, [](Base& b) { b.save.positions.dtype = DType::kF32; }},
      {"negative position", "positions", kInv, [](Base& b) { b.pos[0] = -2; }},
      {"state width", "state_cache", kInv, [](Base& b) { b.save.state_cache.shape[2] = 1024; }},
      {"state dtype", "state_cache", kDt, [](Base& b) { b.save.state_cache.dtype = DType::kBF16; }},
      {"slot beyond", "slot_mapping", kInv, [](Base& b) { b.slot[0] = 8; }},
      {"slot rows", "slot_mapping", kInv, [](Base& b) { b.save.slot_mapping.shape[0] = 2; }},
  };
  for (const Mutation& m : cases) {
    Base b;
    m.apply(b);
    EXPECT_TRUE(Fails(openmla::compressor_save_states(b.save), m.needle, m.code)) << m.what;
    for (float v : b.state) ASSERT_EQ(v, 0.25f) << m.what << ": wrote the state";
  }
}

TEST(CompressorErrors, StoreNamesTheArgument) {
  const StatusCode kInv = StatusCode::kInvalidArgument, kDt = StatusCode::kWrongDtype;
  const std::vector<Mutation> cases = {
      {"ratio", "compress_ratio", kInv, [](Base& b) { b.store.compress_ratio = 8; }},
      {"weight dtype", "rms_norm_weight", kDt,
       [](Base& b) { b.store.rms_norm_weight.dtype = DType::kBF16; }},
      {"weight size", "rms_norm_weight", StatusCode::kUnsupported,
       [](Base& b) { b.store.rms_norm_weight.shape[0] = 256; }},
      {"indexer cache bytes", "kv_cache", kInv,
       [](Base& b) {
         b.store.rms_norm_weight.shape[0] = 128;
         b.store.state_cache.shape[2] = 512;
         b.store.kv_cache.shape[3] = 100;
       }},
      {"indexer cache stride", "kv_cache (indexer cache)", kInv,
       [](Base& b) {
         b.store.rms_norm_weight.shape[0] = 128;
         b.store.state_cache.shape[2] = 512;
         b.store.kv_cache = openmla::make_strided_tensor(b.kv.data(), DType::kU8, {2, 2, 1, 132},
                                                         {264, 133, 133, 1});
       }},
      {"eps", "rms_norm_eps", kInv, [](Base& b) { b.store.rms_norm_eps = NAN; }},
      {"cos_sin dtype", "cos_sin_cache", kDt,
       [](Base& b) { b.store.cos_sin_cache.dtype = DType::kBF16; }},
      {"cos_sin rope dim", "cos_sin_cache", kInv,
       [](Base& b) { b.store.cos_sin_cache.shape[1] = 32; }},
      {"cos_sin too short", "cos_sin_cache", kInv, [](Base& b) { b.pos[0] = 11; }},
      {"state width", "state_cache", kInv, [](Base& b) { b.store.state_cache.shape[2] = 1024; }},
      {"gather window", "gather_slots", kInv, [](Base& b) { b.store.gather_slots.shape[1] = 4; }},
      {"gather dtype", "gather_slots", kDt,
       [](Base& b) { b.store.gather_slots.dtype = DType::kF32; }},
      {"gather beyond", "gather_slots", kInv, [](Base& b) { b.gather[5] = 8; }},
      {"gather below -1", "gather_slots", kInv, [](Base& b) { b.gather[0] = -3; }},
      {"own token missing", "gather_slots", kInv, [](Base& b) { b.gather[7] = -1; }},
      {"positions rows", "gather_slots", kInv, [](Base& b) { b.store.positions.shape[0] = 0; }},
      {"negative position", "positions", kInv, [](Base& b) { b.pos[0] = -1; }},
      {"kv slot beyond", "kv_slot_mapping", kInv, [](Base& b) { b.kv_slot[0] = 2; }},
      {"kv slot dtype", "kv_slot_mapping", kDt,
       [](Base& b) { b.store.kv_slot_mapping.dtype = DType::kF32; }},
      {"kv cache bytes", "kv_cache", kInv, [](Base& b) { b.store.kv_cache.shape[3] = 656; }},
      {"kv cache dtype", "kv_cache", kDt, [](Base& b) { b.store.kv_cache.dtype = DType::kF32; }},
  };
  for (const Mutation& m : cases) {
    Base b;
    m.apply(b);
    EXPECT_TRUE(Fails(openmla::compressor_store(b.store), m.needle, m.code)) << m.what;
    openmla::Plan plan;
    EXPECT_TRUE(Fails(openmla::plan_compressor_store(b.store, {}, &plan), m.needle, m.code));
    for (uint8_t v : b.kv) ASSERT_EQ(v, 0) << m.what << ": wrote the cache";
  }
}

TEST(CompressorErrors, DuplicateSlotsAreRefused) {
  std::vector<float> a(2 * kWidth, 0.0f), z(2 * kWidth, 0.0f), ape(4 * kWidth, 0.0f);
  std::vector<float> state(4 * 2 * kWidth, 0.0f);
  std::vector<int64_t> pos = {0, 1}, slot = {2, 2};
  openmla::CompressorSaveStatesArgs s;
  s.kv = contiguous_view(a.data(), DType::kF32, {2, kWidth});
  s.score = contiguous_view(z.data(), DType::kF32, {2, kWidth});
  s.ape = contiguous_view(ape.data(), DType::kF32, {4, kWidth});
  s.positions = contiguous_view(pos.data(), DType::kI64, {2});
  s.state_cache = contiguous_view(state.data(), DType::kF32, {1, 4, 2 * kWidth});
  s.slot_mapping = contiguous_view(slot.data(), DType::kI64, {2});
  EXPECT_TRUE(Fails(openmla::compressor_save_states(s), "slot_mapping"));
  slot[1] = -1;  // a skipped token is fine
  EXPECT_TRUE(openmla::compressor_save_states(s).ok());
}

TEST(CompressorErrors, PlanIsBoundToItsShapes) {
  Base b;
  openmla::Plan plan;
  ASSERT_TRUE(openmla::plan_compressor_store(b.store, {}, &plan).ok());
  EXPECT_TRUE(openmla::run_compressor_store(plan, b.store).ok());
  b.store.compress_ratio = 128;
  b.store.gather_slots.shape[1] = 128;
  EXPECT_FALSE(openmla::run_compressor_store(plan, b.store).ok());
}

TEST(CompressorErrors, RopeTableChecksItsArguments) {
  std::vector<float> t(4 * 64);
  const TensorView v = contiguous_view(t.data(), DType::kF32, {4, 64});
  EXPECT_TRUE(openmla::compressor_rope_table(160000.0, 16.0, 65536, 32.0, 1.0, v).ok());
  EXPECT_FLOAT_EQ(t[0], 1.0f);   // position 0: cos 1
  EXPECT_FLOAT_EQ(t[32], 0.0f);  // sin 0
  EXPECT_TRUE(Fails(openmla::compressor_rope_table(1.0, 16.0, 65536, 32.0, 1.0, v), "theta"));
  EXPECT_TRUE(Fails(openmla::compressor_rope_table(1e4, 0.0, 65536, 32.0, 1.0, v), "factor"));
  TensorView bad = v;
  bad.shape[1] = 32;
  EXPECT_TRUE(Fails(openmla::compressor_rope_table(1e4, 1.0, 0, 32.0, 1.0, bad), "cos_sin"));
  bad = v;
  bad.dtype = DType::kBF16;
  EXPECT_TRUE(Fails(openmla::compressor_rope_table(1e4, 1.0, 0, 32.0, 1.0, bad), "cos_sin",
                    StatusCode::kWrongDtype));
}

}  // namespace
