// sinkkv: multi-threaded decode attention (flash-decoding split of the
// cached tokens, merged by log-sum-exp) and the small thread pool it runs on.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "../attention.hpp"
#include "../detail/simd_target.hpp"
#include "../detail/softmax_state.hpp"
#include "../error.hpp"
#include "cpu.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {
/// A hint to the CPU that this thread is spinning.
inline void spin_pause() {
#if defined(__SSE2__) || defined(_M_X64)
  _mm_pause();
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

namespace sinkkv {
// Tagged by the unit's instruction-set flags like CpuKernel (see
// detail/simd_target.hpp): this is inline code too, and a pool or kernel
// compiled with -mavx2 must not be shared with a generic unit.
inline namespace SINKKV_ABI_NAMESPACE {

/// A fixed set of worker threads that run index-parallel tasks with the
/// calling thread. Threads are created by the constructor and joined by the
/// destructor; run() creates no thread and allocates nothing.
///
/// Workers spin briefly after a task (so back-to-back calls, e.g. one per
/// layer, do not pay a wake-up), then sleep on a condition variable: an idle
/// pool costs no CPU. One run() at a time per pool (calls from several
/// threads are serialised by the caller, not by the pool).
class ThreadPool {
 public:
  /// `num_workers` threads besides the caller (>= 0; 0 runs everything on
  /// the caller). Throws sinkkv::Error for a negative count; when the
  /// system refuses a thread, what std::thread threw (std::system_error, or
  /// std::bad_alloc), after stopping and joining the workers already started.
  explicit ThreadPool(int num_workers) {
    SINKKV_CHECK(num_workers >= 0, "ThreadPool: num_workers " << num_workers << " must be >= 0");
    workers_.reserve(static_cast<std::size_t>(num_workers));
    for (int i = 0; i < num_workers; ++i) {
      try {
        workers_.emplace_back([this] { work(); });
      } catch (...) {
        // Destroying a joinable std::thread would terminate the program.
        stop_and_join();
        throw;
      }
    }
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() { stop_and_join(); }

  int num_workers() const { return static_cast<int>(workers_.size()); }
  /// Threads that run tasks: the workers and the caller.
  int num_threads() const { return num_workers() + 1; }

  /// Calls task(i) once for every i in [0, count), on the workers and the
  /// calling thread, and returns when all have finished. `task` must not
  /// throw. No allocation.
  template <class Task>
  void run(int count, Task& task) {
    if (count <= 0) return;
    if (workers_.empty() || count == 1) {
      for (int i = 0; i < count; ++i) task(i);
      return;
    }
    std::uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation = ++generation_;
      call_ = &invoke<Task>;
      context_ = &task;
      count_ = count;
      done_.store(0, std::memory_order_relaxed);
      ticket_.store(generation << 32, std::memory_order_release);
      published_.store(generation, std::memory_order_release);
    }
    wake_.notify_all();
    int finished = drain(generation, &invoke<Task>, &task, count);
    if (finished > 0) done_.fetch_add(finished, std::memory_order_acq_rel);
    for (int spins = 0; done_.load(std::memory_order_acquire) != count; ++spins) {
      if (spins < 4096) {
        detail::spin_pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  void stop_and_join() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
    workers_.clear();
  }

  using Call = void (*)(void*, int);
  template <class Task>
  static void invoke(void* task, int index) {
    (*static_cast<Task*>(task))(index);
  }

  // Claims and runs tasks of `generation` until none is left; returns how
  // many it ran. A claim is a CAS on (generation << 32 | next index), so a
  // thread holding an older generation's task pointer can never claim a
  // newer generation's index.
  int drain(std::uint64_t generation, Call call, void* context, int count) {
    int ran = 0;
    std::uint64_t ticket = ticket_.load(std::memory_order_acquire);
    for (;;) {
      if ((ticket >> 32) != generation || static_cast<int>(ticket & 0xFFFFFFFFu) >= count) return ran;
      if (ticket_.compare_exchange_weak(ticket, ticket + 1, std::memory_order_acq_rel)) {
        call(context, static_cast<int>(ticket & 0xFFFFFFFFu));
        ++ran;
        ticket = ticket_.load(std::memory_order_acquire);
      }
    }
  }

  void work() {
    std::uint64_t seen = 0;
    for (;;) {
      // Spin a little for the next generation before sleeping.
      for (int spins = 0; spins < 2048 && published_.load(std::memory_order_acquire) == seen; ++spins) {
        detail::spin_pause();
      }
      Call call;
      void* context;
      int count;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        call = call_;
        context = context_;
        count = count_;
      }
      const int ran = drain(seen, call, context, count);
      if (ran > 0) done_.fetch_add(ran, std::memory_order_acq_rel);
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;                // guarded by mutex_
  std::uint64_t generation_ = 0;     // guarded by mutex_
  Call call_ = nullptr;              // guarded by mutex_
  void* context_ = nullptr;          // guarded by mutex_
  int count_ = 0;                    // guarded by mutex_
  std::atomic<std::uint64_t> published_{0};  // generation_, readable without the lock
  std::atomic<std::uint64_t> ticket_{0};     // (generation << 32) | next unclaimed index
  std::atomic<int> done_{0};                 // tasks of the current generation finished
  std::vector<std::thread> workers_;
};

/// The task a pool runs by index: a non-owning reference to the kernel's
/// per-thread work, cheap to copy.
class IndexTask {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::remove_cv_t<F>, IndexTask>>>
  explicit IndexTask(F& f) : context_(&f), call_([](void* context, int i) { (*static_cast<F*>(context))(i); }) {}
  void operator()(int index) const { call_(context_, index); }

 private:
  void* context_;
  void (*call_)(void*, int);
};

/// True when Pool can run ParallelCpuKernel's work: `pool.num_threads()`
/// (the threads that run tasks, the caller included) and
/// `pool.run(count, task)`, which calls task(i) once for every i in
/// [0, count) and returns when all have finished (task is an IndexTask
/// lvalue). sinkkv::ThreadPool is one; an engine's own pool (or an OpenMP
/// parallel for) needs only these two members.
template <class Pool, class = void>
struct is_task_pool : std::false_type {};
template <class Pool>
struct is_task_pool<Pool, std::void_t<decltype(static_cast<int>(std::declval<const Pool&>().num_threads())),
                                      decltype(std::declval<Pool&>().run(0, std::declval<IndexTask&>()))>>
    : std::true_type {};
template <class Pool>
inline constexpr bool is_task_pool_v = is_task_pool<Pool>::value;

/// Attention split across threads. Decode, flash-decoding style: the cached
/// tokens (all segments, in order) are cut into one contiguous range per
/// thread, each range runs CpuKernel into its own partial output, and the
/// partials are merged exactly by log-sum-exp (merge_partial). Chunks: the
/// queries are cut into contiguous ranges of equal work (visible tokens),
/// each written by its thread straight into `out`; a chunk with fewer
/// queries than threads is split by tokens like decode and merged (a query
/// that sees no token of a part gets log-sum-exp -inf there).
///
/// The pool is the caller's: a sinkkv::ThreadPool, any type with the two
/// members of is_task_pool_v, or nullptr (single-threaded). It must outlive
/// the kernel. Scratch for the partial outputs is allocated by the
/// constructor for up to `max_query_heads` x `max_head_dim`; a call never
/// creates a thread and never allocates (provided the pool's run() does
/// not). Calls that would gain nothing (fewer than 2 * kMinTokensPerThread
/// tokens, or (query, visible token) pairs for a chunk), exceed the scratch
/// (a token-split chunk needs num_queries * num_query_heads <=
/// max_query_heads), or have more than kMaxSegments segments run
/// single-threaded on the caller: same result, no error. One call at a time
/// per object (the scratch is shared).
///
/// Cost: as CpuKernel, divided over the threads, plus
/// O(threads * heads * head_dim) for the merge.
class ParallelCpuKernel {
 public:
  /// Fewer tokens per thread than this run on the caller alone: waking a
  /// sleeping worker (a futex call) and merging cost microseconds, while
  /// 1,024 tokens of even a small shape (8 KV heads x 64 dims, float) are
  /// about 4 MiB to read, tens of microseconds of work per thread.
  static constexpr int kMinTokensPerThread = 1024;
  static constexpr int kMaxSegments = 8;
  static constexpr int kMaxThreads = 16;

  /// The kernel each thread runs on its range (its options, such as
  /// bfloat16_dot_products, apply to every part).
  CpuKernel kernel;

  /// With sinkkv's own pool, or none (nullptr).
  ParallelCpuKernel(ThreadPool* pool, int max_query_heads, int max_head_dim)
      : ParallelCpuKernel(pool, max_query_heads, max_head_dim, 0) {}

  /// With the caller's own pool type (see is_task_pool_v).
  template <class Pool>
  ParallelCpuKernel(Pool* pool, int max_query_heads, int max_head_dim)
      : ParallelCpuKernel(pool, max_query_heads, max_head_dim, 0) {}

 private:
  template <class Pool>
  ParallelCpuKernel(Pool* pool, int max_query_heads, int max_head_dim, int /*tag*/)
      : max_query_heads_(max_query_heads), max_head_dim_(max_head_dim) {
    static_assert(is_task_pool_v<Pool>,
                  "sinkkv::ParallelCpuKernel: the pool needs `int num_threads() const` and "
                  "`run(int count, IndexTask& task)` calling task(i) for every i in [0, count)");
    SINKKV_CHECK(max_query_heads >= 1 && max_head_dim >= 1,
                 "ParallelCpuKernel: max_query_heads " << max_query_heads << " and max_head_dim " << max_head_dim
                                                      << " must be >= 1");
    int pool_threads = 1;
    if (pool != nullptr) {
      pool_threads = static_cast<int>(pool->num_threads());
      SINKKV_CHECK(pool_threads >= 1, "ParallelCpuKernel: the pool reports num_threads() " << pool_threads
                                                                                            << ", must be >= 1");
      pool_ = pool;
      run_ = [](void* p, int count, IndexTask& task) { static_cast<Pool*>(p)->run(count, task); };
    }
    const int partials = std::min(pool_threads, kMaxThreads) - 1;
    const std::size_t rows = static_cast<std::size_t>(partials) * static_cast<std::size_t>(max_query_heads);
    // Float and double scratch: the compute type is only known per call.
    float_scratch_.reset(new float[rows * static_cast<std::size_t>(max_head_dim + 1) + 1]);
    double_scratch_.reset(new double[rows * static_cast<std::size_t>(max_head_dim + 1) + 1]);
    max_partials_ = partials;
  }

 public:
  /// Threads a call with `num_tokens` tokens would use.
  int threads_for(int num_tokens) const {
    const int by_size = num_tokens / kMinTokensPerThread;
    return std::max(1, std::min(max_partials_ + 1, by_size));
  }

  /// A chunk (see the class comment).
  template <class T>
  void operator()(const ChunkArgs<T>& args, const ChunkOutput<compute_t<T>>& out) const {
    using C = compute_t<T>;
    // Work per query: the tokens it sees; contiguous query ranges of equal work.
    std::int64_t total = 0;
    for (int i = 0; i < args.num_queries; ++i) total += visible_tokens(args, i);
    const int threads = static_cast<int>(
        std::min<std::int64_t>(max_partials_ + 1, std::max<std::int64_t>(1, total / kMinTokensPerThread)));
    if (threads < 2) {
      kernel(args, out);
      return;
    }
    if (args.num_queries >= threads) {
      int first[kMaxThreads + 1];
      first[0] = 0;
      std::int64_t done = 0;
      int part = 1;
      for (int i = 0; i < args.num_queries && part < threads; ++i) {
        done += visible_tokens(args, i);
        while (part < threads && done * threads >= total * part) first[part++] = i + 1;
      }
      while (part <= threads) first[part++] = args.num_queries;
      auto work = [&](int p) {
        if (first[p + 1] > first[p]) kernel.attend_queries(args, out, first[p], first[p + 1] - first[p]);
      };
      IndexTask task(work);
      run_tasks(threads, task);
      return;
    }
    // Fewer queries than threads: split the tokens, merge by log-sum-exp.
    int tokens = 0;
    for (int s = 0; s < args.num_segments; ++s) tokens += args.segments[s].length;
    if (args.num_segments > kMaxSegments || args.num_queries * args.num_query_heads > max_query_heads_ ||
        args.head_dim > max_head_dim_) {
      kernel(args, out);
      return;
    }
    C* scratch = scratch_for<C>();
    const std::ptrdiff_t rows = max_query_heads_;
    ChunkSegment<T> segments[kMaxThreads][kMaxSegments];
    ChunkArgs<T> part_args[kMaxThreads];
    ChunkOutput<C> part_out[kMaxThreads];
    for (int p = 0; p < threads; ++p) {
      const int begin = static_cast<int>(static_cast<std::int64_t>(tokens) * p / threads);
      const int end = static_cast<int>(static_cast<std::int64_t>(tokens) * (p + 1) / threads);
      const int count = slice_tokens(args.segments, args.num_segments, begin, end, segments[p]);
      part_args[p] = args;
      part_args[p].segments = segments[p];
      part_args[p].num_segments = count;
      if (p == 0) {
        part_out[p] = out;
      } else {
        // [num_queries][num_query_heads][head_dim], then the log-sum-exps
        C* base = scratch + (p - 1) * rows * (max_head_dim_ + 1);
        part_out[p] = ChunkOutput<C>{base, static_cast<std::ptrdiff_t>(args.num_query_heads) * args.head_dim,
                                     args.head_dim, base + rows * max_head_dim_};
      }
    }
    auto work = [&](int p) { kernel(part_args[p], part_out[p]); };
    IndexTask task(work);
    run_tasks(threads, task);
    for (int p = 1; p < threads; ++p) {
      for (int i = 0; i < args.num_queries; ++i) {
        const std::ptrdiff_t lse = static_cast<std::ptrdiff_t>(i) * args.num_query_heads;
        merge(args.num_query_heads, args.head_dim,
              AttentionOutput<C>{out.data + i * out.query_stride, out.head_stride, out.log_sum_exp + lse},
              AttentionOutput<C>{part_out[p].data + i * part_out[p].query_stride, part_out[p].head_stride,
                                 part_out[p].log_sum_exp + lse});
      }
    }
  }

  /// Decode (see the class comment).
  template <class T>
  void operator()(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out) const {
    using C = compute_t<T>;
    const int total = args.num_tokens();
    const int threads = threads_for(total);
    if (threads < 2 || args.num_segments > kMaxSegments || args.num_query_heads > max_query_heads_ ||
        args.head_dim > max_head_dim_) {
      kernel(args, out);
      return;
    }
    C* scratch = scratch_for<C>();
    const std::ptrdiff_t rows = max_query_heads_;
    KVSegment<T> segments[kMaxThreads][kMaxSegments];
    AttentionArgs<T> part_args[kMaxThreads];
    AttentionOutput<C> part_out[kMaxThreads];
    for (int p = 0; p < threads; ++p) {
      const int begin = static_cast<int>(static_cast<std::int64_t>(total) * p / threads);
      const int end = static_cast<int>(static_cast<std::int64_t>(total) * (p + 1) / threads);
      const int count = slice_tokens(args.segments, args.num_segments, begin, end, segments[p]);
      part_args[p] = args;
      part_args[p].segments = segments[p];
      part_args[p].num_segments = count;
      if (p == 0) {
        part_out[p] = out;
      } else {
        C* base = scratch + (p - 1) * rows * (max_head_dim_ + 1);
        part_out[p] = AttentionOutput<C>{base, args.head_dim, base + rows * max_head_dim_};
      }
    }
    auto work = [&](int p) { kernel(part_args[p], part_out[p]); };
    IndexTask task(work);
    run_tasks(threads, task);
    for (int p = 1; p < threads; ++p) merge(args.num_query_heads, args.head_dim, out, part_out[p]);
  }

 private:
  /// The parts of `segments` (their tokens numbered across all of them, in
  /// order) that fall in tokens [begin, end), written to `slices`; returns
  /// how many.
  template <class Segment>
  static int slice_tokens(const Segment* segments, int num_segments, int begin, int end, Segment* slices) {
    int count = 0;
    int first = 0;  // token index where segment s starts
    for (int s = 0; s < num_segments; ++s) {
      const int lo = std::max(begin, first);
      const int hi = std::min(end, first + segments[s].length);
      if (lo < hi) slices[count++] = segments[s].slice(lo - first, hi - lo);
      first += segments[s].length;
    }
    return count;
  }

  template <class T>
  static std::int64_t visible_tokens(const ChunkArgs<T>& args, int query) {
    std::int64_t n = 0;
    for (int s = 0; s < args.num_segments; ++s) {
      const std::pair<int, int> visible = args.visible(args.segments[s], query);
      n += visible.second - visible.first;
    }
    return n;
  }

  void run_tasks(int count, IndexTask& task) const {
    if (run_ != nullptr) {
      run_(pool_, count, task);
    } else {
      for (int p = 0; p < count; ++p) task(p);
    }
  }

  /// merge_partial (attention.hpp), compiled here under this unit's tag.
  template <class C>
  static void merge(int num_heads, int head_dim, const AttentionOutput<C>& a, const AttentionOutput<C>& b) {
    for (int h = 0; h < num_heads; ++h) {
      const auto w = detail::merge_weights(a.log_sum_exp[h], b.log_sum_exp[h]);
      C* out = a.data + h * a.head_stride;
      const C* other = b.data + h * b.head_stride;
      for (int d = 0; d < head_dim; ++d) out[d] = w.weight_a * out[d] + w.weight_b * other[d];
      a.log_sum_exp[h] = w.log_sum_exp;
    }
  }

  template <class C>
  C* scratch_for() const {
    if constexpr (std::is_same_v<C, double>) {
      return double_scratch_.get();
    } else {
      return float_scratch_.get();
    }
  }

  void* pool_ = nullptr;
  void (*run_)(void* pool, int count, IndexTask& task) = nullptr;  // pool_'s run(), type-erased
  int max_query_heads_;
  int max_head_dim_;
  int max_partials_ = 0;
  // [threads - 1][max_query_heads * max_head_dim outputs, then max_query_heads log-sum-exps]
  std::unique_ptr<float[]> float_scratch_;
  std::unique_ptr<double[]> double_scratch_;
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv
