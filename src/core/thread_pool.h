// A persistent thread pool with static partitioning. `parallel_for` splits [0, count) into
// `num_threads` contiguous chunks, chunk t always goes to worker t, so a kernel that writes each
// output from exactly one chunk is deterministic whatever the thread count. Nested calls run
// inline on the calling thread. OPENMLA_PIN_THREADS=1 pins worker t to CPU t.
#pragma once

#include <cstdint>
#include <functional>

namespace openmla {

/// Online cores (at least 1).
int hardware_threads();

/// Threads to use when the caller asked for `requested` (0 = OPENMLA_NUM_THREADS or all cores).
int resolve_num_threads(int requested);

/// Calls fn(task, thread) for each task in [0, num_tasks) with tasks statically spread over
/// `num_threads` threads (thread t gets tasks [t*n/T, (t+1)*n/T)). Returns when all are done;
/// the first exception thrown by fn is rethrown on the calling thread.
void parallel_for(int64_t num_tasks, int num_threads,
                  const std::function<void(int64_t task, int thread)>& fn);

/// Pins the calling thread and the pool's workers to CPUs 0..n-1 (used by benchmarks).
void pin_threads(bool enable);

}  // namespace openmla
