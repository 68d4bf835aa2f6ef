// Timing of the V4 block bench ops (cli_bench_v4*.cpp): calls that need no generated attention
// case, timed interleaved with the matmul probe as bench_case does for the attention ops.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cli_bench.h"

namespace openmla::cli {

/// One kernel to time: its name and a call on layer i.
struct TimedCall {
  std::string kernel;
  std::function<Status(std::size_t layer)> call;
};

/// Times the calls interleaved (call i of a kernel on layer i mod layers) with a matmul probe per
/// round, measures the limits again after them, times `ref` once when --vs-ref (ref.call empty:
/// none) and prints one line per kernel. Returns the op's exit code.
int bench_calls(const std::vector<TimedCall>& calls, std::size_t layers, const TimedCall& ref,
                const BenchCommon& k, const Limits& lim, const char* op, BenchLine* line);

/// The calls of a plan-based op: one plan per --impl name ("" = the registry's choice, a name
/// without a dot is prefixed with "<op>."), made on layers[0]; the reference from "<op>.ref".
/// Returns the op's exit code.
template <typename Case>
int bench_planned(const std::vector<Case>& layers, Op op, const BenchCommon& k, const Limits& lim,
                  const char* name, BenchLine* line) {
  auto make = [&](const std::string& impl, std::vector<TimedCall>* out) {
    Options o;
    o.num_threads = k.threads;
    const std::string kernel = impl.empty() || impl.find('.') != std::string::npos
                                   ? impl
                                   : std::string(op_name(op)) + "." + impl;
    o.kernel = kernel.empty() ? nullptr : kernel.c_str();
    auto plan = std::make_shared<Plan>();
    const Status s = layers[0].plan(o, plan.get());
    if (!s.ok()) return s;
    out->push_back({plan->kernel_name(), [plan, &layers](std::size_t i) {
                      return layers[i % layers.size()].run(*plan);
                    }});
    return s;
  };
  std::vector<TimedCall> calls, ref;
  for (const std::string& impl : k.impls) {
    const Status s = make(impl, &calls);
    if (!s.ok()) return finish(s);
  }
  if (k.vs_ref) {
    const Status s = make(std::string(op_name(op)) + ".ref", &ref);
    if (!s.ok()) return finish(s);
  }
  return bench_calls(calls, layers.size(), ref.empty() ? TimedCall{} : ref[0], k, lim, name, line);
}

void add_bench_compressor(Command& bench);
void add_bench_mhc(Command& bench);
void add_bench_engram(Command& bench);

}  // namespace openmla::cli
