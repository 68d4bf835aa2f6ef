#include "core/thread_pool.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace openmla {
namespace {

thread_local bool tls_inside_pool = false;

void pin_current_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % hardware_threads(), &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

class ThreadPool {
 public:
  static ThreadPool& instance() {
    static ThreadPool* pool = [] {
      ThreadPool* p = new ThreadPool();  // leaked on purpose: detached workers outlive statics
      const char* env = std::getenv("OPENMLA_PIN_THREADS");
      p->pin_ = env != nullptr && env[0] == '1';
      return p;
    }();
    return *pool;
  }

  void run(int num_threads, const std::function<void(int)>& body) {
    std::lock_guard<std::mutex> call_lock(call_mutex_);
    ensure_workers(num_threads - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      active_ = num_threads - 1;
      pending_ = num_threads - 1;
      ++generation_;
    }
    wake_.notify_all();
    tls_inside_pool = true;
    body(0);
    tls_inside_pool = false;
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    body_ = nullptr;
  }

  void set_pinning(bool enable) {
    std::lock_guard<std::mutex> lock(mutex_);
    pin_ = enable;
    ++pin_epoch_;
  }

 private:
  void ensure_workers(int count) {
    while (static_cast<int>(workers_.size()) < count) {
      const int index = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, index] { worker_loop(index); });
      workers_.back().detach();
    }
  }

  void worker_loop(int index) {
    tls_inside_pool = true;
    uint64_t seen = 0;
    int pinned_epoch = -1;
    for (;;) {
      const std::function<void(int)>* body;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (index > active_) continue;
        body = body_;
        if (pin_ && pinned_epoch != pin_epoch_) {
          pin_current_thread(index);
          pinned_epoch = pin_epoch_;
        }
      }
      (*body)(index);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex call_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* body_ = nullptr;
  uint64_t generation_ = 0;
  int active_ = 0;
  int pending_ = 0;
  bool pin_ = false;
  int pin_epoch_ = 0;
};

}  // namespace

int hardware_threads() {
  static const int n = [] {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }();
  return n;
}

int resolve_num_threads(int requested) {
  if (requested > 0) return std::min(requested, 256);
  if (const char* env = std::getenv("OPENMLA_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return std::min(n, 256);
  }
  return hardware_threads();
}

void parallel_for(int64_t num_tasks, int num_threads,
                  const std::function<void(int64_t, int)>& fn) {
  if (num_tasks <= 0) return;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, num_tasks)));
  if (threads == 1 || tls_inside_pool) {
    for (int64_t task = 0; task < num_tasks; ++task) fn(task, 0);
    return;
  }
  // An exception (e.g. std::bad_alloc in a kernel's scratch) must not escape a worker thread:
  // the first one is kept and rethrown on the calling thread once every chunk has finished.
  std::mutex error_mutex;
  std::exception_ptr error;
  const std::function<void(int)> body = [&](int thread) {
    const int64_t begin = num_tasks * thread / threads;
    const int64_t end = num_tasks * (thread + 1) / threads;
    try {
      for (int64_t task = begin; task < end; ++task) fn(task, thread);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  ThreadPool::instance().run(threads, body);
  if (error) std::rethrow_exception(error);
}

void pin_threads(bool enable) {
  if (enable) pin_current_thread(0);
  ThreadPool::instance().set_pinning(enable);
}

}  // namespace openmla
