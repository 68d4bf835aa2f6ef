// The end-to-end decode steps of `openmla demo` (testing/demo_steps.h) on small shapes: every
// stage runs and passes its check against the reference kernel, including requests whose
// visible entries are fewer than top-k or than the 128-token window, and the compressor's first
// entry (no history); and the checks reject a wrong slot, a wrong length and a wrong output.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "demo_steps.h"
#include "demo_steps_internal.h"
#include "openmla/indexer_cache.h"

namespace {

using openmla::testing::StepResult;

void expect_passes(const StepResult& step, size_t stages) {
  EXPECT_EQ(step.stages.size(), stages) << openmla::testing::format_step(step);
  EXPECT_TRUE(step.ok()) << openmla::testing::format_step(step);
  for (const auto& s : step.stages) EXPECT_FALSE(s.kernel.empty()) << s.stage;
}

TEST(DemoSteps, V32DecodeStepMatchesReference) {
  openmla::testing::V32StepConfig c;
  c.tokens = 2000;  // requests of 2000 and 469 tokens
  c.heads_q = 16;
  c.index_heads = 8;
  c.topk = 256;
  c.threads = 2;
  expect_passes(openmla::testing::run_v32_decode_step(c), 3);
}

TEST(DemoSteps, V32DecodeStepWithFewerTokensThanTopk) {
  openmla::testing::V32StepConfig c;
  c.batch = 3;
  c.tokens = 300;  // 300, 1 and 1 tokens: topk_length 256, 1, 1
  c.page_size = 16;
  c.heads_q = 8;
  c.index_heads = 4;
  c.topk = 256;
  c.threads = 1;
  expect_passes(openmla::testing::run_v32_decode_step(c), 3);
}

TEST(DemoSteps, V4DecodeStepMatchesReference) {
  openmla::testing::V4StepConfig c;
  c.entries = 400;  // 400 and 83 compressed entries, positions 1599 and 331
  c.hidden = 256;
  c.heads_q = 16;
  c.index_heads = 8;
  c.topk = 64;
  c.threads = 2;
  expect_passes(openmla::testing::run_v4_decode_step(c), 6);
}

TEST(DemoSteps, V4DecodeStepWithShortContexts) {
  openmla::testing::V4StepConfig c;
  c.batch = 3;
  c.entries = 20;  // 20, 1, 1 entries: positions 79, 3, 3 (partial windows, first entry)
  c.hidden = 128;
  c.hc = 4;
  c.heads_q = 4;
  c.index_heads = 4;
  c.topk = 32;
  c.page_size = 8;
  c.threads = 1;
  expect_passes(openmla::testing::run_v4_decode_step(c), 6);
}

/// A 1-request, 1-page FP8 indexer cache of 16 random keys with its q and weights.
struct TinyIndexer {
  openmla::testing::Rng rng{5};
  std::vector<uint8_t> cache = std::vector<uint8_t>(16 * 132, 0xFF);
  std::vector<uint8_t> q = openmla::testing::demo::random_e4m3(2 * 128, rng);
  std::vector<float> weights = {0.5f, -0.25f};
  std::vector<int32_t> lens = {16}, table = {0};
  openmla::PagedMqaLogitsArgs args;
  TinyIndexer() {
    using openmla::testing::tensor_view;
    const std::vector<float> keys = openmla::testing::demo::random_floats(16 * 128, rng, 1, 0);
    std::vector<int32_t> slots(16);
    for (int i = 0; i < 16; ++i) slots[i] = i;
    args.q = tensor_view(q.data(), openmla::DType::kU8, {1, 1, 2, 128});
    args.kv_cache = tensor_view(cache.data(), openmla::DType::kU8, {1, 16, 1, 132});
    args.weights = tensor_view(weights.data(), openmla::DType::kF32, {1, 2});
    args.context_lens = tensor_view(lens.data(), openmla::DType::kI32, {1});
    args.block_table = tensor_view(table.data(), openmla::DType::kI32, {1, 1});
    EXPECT_TRUE(
        openmla::indexer_write_keys(tensor_view(keys.data(), openmla::DType::kF32, {16, 128}),
                                    tensor_view(slots.data(), openmla::DType::kI32, {16}),
                                    openmla::IndexerKeyFormat::kFp8, args.kv_cache)
            .ok());
  }
};

TEST(DemoSteps, TopkCheckRejectsWrongSlotsAndLengths) {
  namespace demo = openmla::testing::demo;
  TinyIndexer t;
  const demo::TopkRun ref = demo::run_fused_topk(t.args, 4, "paged_indexer_topk.ref", 1);
  ASSERT_TRUE(ref.status.ok()) << ref.status.to_string();
  const demo::TopkScorer scorer{&t.args, 2};
  EXPECT_TRUE(demo::check_topk("topk", ref, ref, scorer, 4).ok);
  demo::TopkRun wrong = ref;
  for (int32_t slot = 0; slot < 16; ++slot)
    if (std::find(ref.indices.begin(), ref.indices.end(), slot) == ref.indices.end()) {
      wrong.indices[0] = slot;  // a slot outside the top-4, in place of a selected one
      break;
    }
  EXPECT_FALSE(demo::check_topk("topk", wrong, ref, scorer, 4).ok);
  wrong = ref;
  wrong.lengths[0] = 3;
  EXPECT_FALSE(demo::check_topk("topk", wrong, ref, scorer, 4).ok);
}

TEST(DemoSteps, DecodeCheckRejectsAWrongOutput) {
  const std::vector<uint16_t> out(64, 0x3F80);  // 1.0
  const std::vector<float> lse(4, 2.0f);
  double err = 0.0;
  std::string message;
  EXPECT_TRUE(openmla::testing::demo::check_decode_outputs(out, out, lse, lse, &err, &message));
  std::vector<uint16_t> bad = out;
  bad[7] = 0x3F90;  // 1.125
  EXPECT_FALSE(openmla::testing::demo::check_decode_outputs(bad, out, lse, lse, &err, &message));
  EXPECT_NE(message.find("out"), std::string::npos) << message;
}

}  // namespace
