// Decode attention (one query token, all heads, one layer) vs cache length x
// shape x storage type x threads, against the roofline bound measured in the
// same run, an Eigen GEMV/softmax/GEMV baseline and a baseline that re-reads
// K/V once per query head (the structure of ggml's CPU flash attention).
// Chunked attention (C queries at once, prefill) vs the FMA peak measured in
// the same binary and vs C single-token decode calls over the same cache.
//
// Every benchmark checks its result against a double-precision oracle once
// before timing (ReferenceKernel itself for small problems) and aborts on a
// mismatch. Times are wall-clock (UseRealTime), warm cache: the same K/V is
// attended on every iteration, as a decode step does layer after layer.
//
//   attention_bench [--sinkkv_smoke] [Google Benchmark flags]
// --sinkkv_smoke registers only small sizes (for the CI smoke test).
#include "bench_support.hpp"

#include <sinkkv/kernels/cpu.hpp>
#include <sinkkv/kernels/parallel.hpp>
#include <sinkkv/kernels/reference.hpp>

#include <Eigen/Core>

#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

// GCC 12.1/12.2 (PR 105593) reports "__Y is used uninitialized" inside the
// AVX-512 intrinsics Eigen's GEMV inlines into the baseline below.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace {

using namespace sinkkv;
using bench::AlignedBuffer;

struct Shape {
  int query_heads;
  int kv_heads;
  int head_dim;
};

std::string shape_name(const Shape& s) {
  std::ostringstream os;
  os << s.query_heads << "/" << s.kv_heads << "/" << s.head_dim;
  return os.str();
}

/// One layer's cache as SinkKVCache lays it out: [kv_heads][capacity][head_dim]
/// for keys and for values, 4 sink tokens and a wrapped window ring, i.e.
/// three segments (sinks; window slots [split, n); window slots [4, split)),
/// the sinks with their own query frame.
template <class T>
struct Problem {
  using C = compute_t<T>;
  Shape shape;
  int length;
  AlignedBuffer<T> keys, values;
  std::vector<C> sink_query, window_query;  // [query_heads][head_dim]
  KVSegment<T> segments[3];
  AttentionArgs<T> args;
  std::vector<double> want, want_lse;  // the oracle's output

  Problem(const Shape& s, int n)
      : shape(s),
        length(n),
        keys(static_cast<std::size_t>(s.kv_heads) * n * s.head_dim),
        values(keys.size) {
    std::mt19937 rng(1234u + static_cast<unsigned>(n));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (std::size_t i = 0; i < keys.size; ++i) keys.get()[i] = detail::from_double<T>(normal(rng));
    for (std::size_t i = 0; i < values.size; ++i) values.get()[i] = detail::from_double<T>(normal(rng));
    sink_query.resize(static_cast<std::size_t>(s.query_heads) * s.head_dim);
    window_query.resize(sink_query.size());
    for (auto& q : sink_query) q = static_cast<C>(normal(rng));
    for (auto& q : window_query) q = static_cast<C>(normal(rng));
    const int sinks = std::min(4, n);
    const int window = n - sinks;
    const int split = sinks + window * 3 / 5;  // ring wrap point
    const std::ptrdiff_t head_stride = static_cast<std::ptrdiff_t>(n) * s.head_dim;
    auto make = [&](int first_slot, int count, const C* query, int distance) {
      KVSegment<T> seg;
      seg.query = query;
      seg.keys = keys.get() + static_cast<std::ptrdiff_t>(first_slot) * s.head_dim;
      seg.values = values.get() + static_cast<std::ptrdiff_t>(first_slot) * s.head_dim;
      seg.token_stride = s.head_dim;
      seg.head_stride = head_stride;
      seg.length = count;
      seg.query_distance = distance;
      return seg;
    };
    int count = 0;
    segments[count++] = make(0, sinks, sink_query.data(), n - 1);
    if (split < n) segments[count++] = make(split, n - split, window_query.data(), n - 1 - sinks);
    if (split > sinks) segments[count++] = make(sinks, split - sinks, window_query.data(), split - 1 - sinks);
    args.num_query_heads = s.query_heads;
    args.num_kv_heads = s.kv_heads;
    args.head_dim = s.head_dim;
    args.scale = static_cast<C>(1.0 / std::sqrt(static_cast<double>(s.head_dim)));
    args.segments = segments;
    args.num_segments = count;
    bench::dense_oracle(args, want, want_lse);
  }

  std::size_t kv_bytes() const { return 2 * keys.size * sizeof(T); }
  double flops() const { return 4.0 * shape.query_heads * static_cast<double>(length) * shape.head_dim; }
};

/// The problem of the running benchmark; rebuilt when the size or type
/// changes (benchmarks are registered grouped by problem), so at most one
/// large cache is resident.
template <class T>
Problem<T>& problem_for(const Shape& s, int n) {
  static std::unique_ptr<Problem<T>> current;
  if (!current || current->length != n || current->shape.query_heads != s.query_heads ||
      current->shape.kv_heads != s.kv_heads || current->shape.head_dim != s.head_dim) {
    current.reset();
    current = std::make_unique<Problem<T>>(s, n);
  }
  return *current;
}

// ---- baselines ---------------------------------------------------------------

/// Plain Eigen, per query head: scores = K q (GEMV), softmax, out = V^T p
/// (GEMV). Each head re-reads its KV head's rows. Half types go through
/// lazy products of cast expressions (the GEMV kernels need float data).
struct EigenBaseline {
  mutable Eigen::VectorXf scores;  // [num_tokens], sized by prepare()
  void prepare(int num_tokens) { scores.resize(num_tokens); }

  template <class T>
  void operator()(const AttentionArgs<T>& args, const AttentionOutput<float>& out) const {
    using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Map = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>;
    const int dim = args.head_dim;
    for (int q = 0; q < args.num_query_heads; ++q) {
      const int kv = args.kv_head_of(q);
      int offset = 0;
      for (int s = 0; s < args.num_segments; ++s) {
        const KVSegment<T>& seg = args.segments[s];
        const Map keys(seg.keys + kv * seg.head_stride, seg.length, dim, Eigen::OuterStride<>(seg.token_stride));
        const Eigen::Map<const Eigen::VectorXf> query(seg.query + q * dim, dim);
        if constexpr (std::is_same_v<T, float>) {
          scores.segment(offset, seg.length).noalias() = keys * query;
        } else {
          scores.segment(offset, seg.length).noalias() = keys.template cast<float>().lazyProduct(query);
        }
        offset += seg.length;
      }
      scores *= args.scale;
      const float max_score = scores.maxCoeff();
      scores = (scores.array() - max_score).exp();
      const float sum = scores.sum();
      Eigen::Map<Eigen::VectorXf> row(out.data + q * out.head_stride, dim);
      row.setZero();
      offset = 0;
      for (int s = 0; s < args.num_segments; ++s) {
        const KVSegment<T>& seg = args.segments[s];
        const Map values(seg.values + kv * seg.head_stride, seg.length, dim, Eigen::OuterStride<>(seg.token_stride));
        if constexpr (std::is_same_v<T, float>) {
          row.noalias() += values.transpose() * scores.segment(offset, seg.length);
        } else {
          row.noalias() += values.template cast<float>().transpose().lazyProduct(scores.segment(offset, seg.length));
        }
        offset += seg.length;
      }
      row /= sum;
      out.log_sum_exp[q] = max_score + std::log(sum);
    }
  }
};

/// ggml's CPU flash-attention structure for one query row (per query head,
/// per token: vector dot product, scalar online-softmax update, vector
/// multiply-add of the value row), vectorised with the variant CpuKernel
/// runs; see bench_variant.inl.
struct RereadBaseline {
  template <class T>
  void operator()(const AttentionArgs<T>& args, const AttentionOutput<float>& out) const {
    bench::with_variant(bench::kernel_variant(), [&](auto v) { decltype(v)::reread(args, out); });
  }
};

// ---- the benchmark -------------------------------------------------------------

enum class Kernel { kCpu, kCpuBfloat16Dot, kEigen, kReread };
const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::kCpu: return "cpu";
    case Kernel::kCpuBfloat16Dot: return "cpu_bf16dot";
    case Kernel::kEigen: return "eigen_gemv";
    case Kernel::kReread: return "reread_per_head";
  }
  return "?";
}

template <class T>
void check(const Problem<T>& p, const float* out, const float* lse, const char* what) {
  // Float arithmetic on the same stored K/V: 1e-4 leaves room for 65,536-term
  // sums in float (the test suite holds CpuKernel to 2e-5 on <= 3,000).
  std::vector<double> rounded_want, rounded_want_lse;
  const std::vector<double>* want = &p.want;
  const std::vector<double>* want_lse = &p.want_lse;
  if (std::strcmp(what, kernel_name(Kernel::kCpuBfloat16Dot)) == 0) {
    // That kernel scores with the query rounded to bfloat16: so does its oracle.
    auto round = [](std::vector<float> q) {
      for (auto& x : q) x = static_cast<float>(Eigen::bfloat16(x));
      return q;
    };
    const std::vector<float> sink_query = round(p.sink_query), window_query = round(p.window_query);
    KVSegment<T> segments[3];
    for (int s = 0; s < p.args.num_segments; ++s) {
      segments[s] = p.segments[s];
      segments[s].query = p.segments[s].query == p.sink_query.data() ? sink_query.data() : window_query.data();
    }
    AttentionArgs<T> args = p.args;
    args.segments = segments;
    bench::dense_oracle(args, rounded_want, rounded_want_lse);
    want = &rounded_want;
    want_lse = &rounded_want_lse;
  }
  const double worst = bench::worst_error(out, p.shape.head_dim, lse, *want, *want_lse, p.shape.query_heads,
                                          p.shape.head_dim, 1e-4);
  if (!(worst <= 1.0)) {
    std::fprintf(stderr, "%s: result differs from the oracle (worst error %.3g x tolerance) for %s n=%d\n", what,
                 worst, shape_name(p.shape).c_str(), p.length);
    std::abort();
  }
}

template <class T>
void attention_benchmark(benchmark::State& state, Shape shape, int length, Kernel which, int threads) {
  Problem<T>& p = problem_for<T>(shape, length);
  std::vector<float> out(static_cast<std::size_t>(shape.query_heads) * shape.head_dim);
  std::vector<float> lse(static_cast<std::size_t>(shape.query_heads));
  const AttentionOutput<float> result{out.data(), shape.head_dim, lse.data()};

  static ThreadPool pool(1);  // caller + 1 worker: the 2 cores of the machine
  ParallelCpuKernel parallel(threads > 1 ? &pool : nullptr, shape.query_heads, shape.head_dim);
  EigenBaseline eigen;
  eigen.prepare(p.args.num_tokens());
  auto run = [&] {
    switch (which) {
      case Kernel::kCpu:
        if (threads > 1) {
          parallel(p.args, result);
        } else {
          CpuKernel{}(p.args, result);
        }
        break;
      case Kernel::kCpuBfloat16Dot: {
        CpuKernel kernel;
        kernel.bfloat16_dot_products = true;
        kernel(p.args, result);
        break;
      }
      case Kernel::kEigen: eigen(p.args, result); break;
      case Kernel::kReread: RereadBaseline{}(p.args, result); break;
    }
  };
  run();
  check(p, out.data(), lse.data(), kernel_name(which));

  const double bandwidth = bench::bound_bandwidth(p.kv_bytes());
  const double bound = std::max(static_cast<double>(p.kv_bytes()) / bandwidth, p.flops() / bench::fma_peak());
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(p.kv_bytes()));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * length);  // cached tokens attended
  // roofline = bound time / measured time (1.0 = at the bound; single-thread bound)
  state.counters["roofline"] = benchmark::Counter(bound, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bound_us"] = bound * 1e6;
  state.counters["probe_GBps"] = bandwidth * 1e-9;
  state.counters["threads"] = threads > 1 ? parallel.threads_for(length) : 1;
}

void probe_bandwidth(benchmark::State& state) {
  const std::size_t bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t n = bytes / sizeof(float);
  AlignedBuffer<float> buffer(n);
  for (std::size_t i = 0; i < n; ++i) buffer.get()[i] = 1e-3f;
  for (auto _ : state) benchmark::DoNotOptimize(bench::sum_floats<1, 0>(buffer.get(), n));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(bytes));
  state.counters["best_GBps"] = bench::read_bandwidth(bytes) * 1e-9;
}

void probe_fma(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(bench::fma_peak());
  state.counters["GFLOPs"] = bench::fma_peak() * 1e-9;
}

/// ReferenceKernel vs the bench oracle on a small problem: the oracle the
/// benchmarks trust is itself checked.
void check_oracle() {
  Problem<float> p({8, 2, 32}, 300);
  std::vector<float> out(8 * 32), lse(8);
  ReferenceKernel{}(p.args, AttentionOutput<float>{out.data(), 32, lse.data()});
  if (bench::worst_error(out.data(), 32, lse.data(), p.want, p.want_lse, 8, 32, 1e-5) > 1.0) {
    std::fprintf(stderr, "bench oracle disagrees with ReferenceKernel\n");
    std::abort();
  }
}

template <class T>
const char* type_name() {
  return detail::ElementTraits<T>::kName;
}

template <class T>
void register_type(const std::vector<Shape>& shapes, const std::vector<int>& lengths) {
  for (const Shape& shape : shapes) {
    for (int length : lengths) {
      auto add = [&](Kernel which, int threads) {
        std::ostringstream name;
        name << "attention/" << kernel_name(which) << "/" << type_name<T>() << "/" << shape_name(shape)
             << "/len:" << length << "/threads:" << threads;
        auto* b = benchmark::RegisterBenchmark(name.str().c_str(), attention_benchmark<T>, shape, length, which,
                                               threads);
        b->UseRealTime()->Unit(benchmark::kMicrosecond);
        bench::add_best_of_n(b);
      };
      add(Kernel::kCpu, 1);
      add(Kernel::kCpu, 2);
      if (CpuKernel{}.uses_bfloat16_dot<T>(shape.head_dim)) add(Kernel::kCpuBfloat16Dot, 1);
      add(Kernel::kEigen, 1);
      add(Kernel::kReread, 1);
    }
  }
}

// ---- chunks ------------------------------------------------------------------

/// A prefill chunk as SinkKVCache lays it out: 4 sinks (sink frame, each
/// query at its own cache position) and a window ring holding `cached`
/// tokens then the chunk's C tokens (stream frame); the window is large
/// enough that every query sees every older token (causal). Also the same
/// work as C decode calls: query i alone over the tokens it sees.
template <class T>
struct ChunkProblem {
  using C = compute_t<T>;
  static constexpr int kSinks = 4;
  Shape shape;
  int cached, queries;
  AlignedBuffer<T> keys, values;  // [kv_heads][kSinks + cached + queries][head_dim]
  std::vector<C> rows[kNumFrames];  // [queries][query_heads][head_dim]
  std::vector<int> offsets[kNumFrames];
  ChunkSegment<T> segments[2];
  ChunkArgs<T> args;
  std::vector<KVSegment<T>> decode_segments;  // [queries][2]
  std::vector<AttentionArgs<T>> decode_args;  // [queries]
  double visible = 0;                         // sum over queries of the tokens each sees

  ChunkProblem(const Shape& s, int cached_tokens, int chunk)
      : shape(s),
        cached(cached_tokens),
        queries(chunk),
        keys(static_cast<std::size_t>(s.kv_heads) * (kSinks + cached_tokens + chunk) * s.head_dim),
        values(keys.size) {
    std::mt19937 rng(99u + static_cast<unsigned>(cached_tokens + chunk));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (std::size_t i = 0; i < keys.size; ++i) keys.get()[i] = detail::from_double<T>(normal(rng));
    for (std::size_t i = 0; i < values.size; ++i) values.get()[i] = detail::from_double<T>(normal(rng));
    const int capacity = kSinks + cached + queries;
    for (int f = 0; f < kNumFrames; ++f) {
      rows[f].resize(static_cast<std::size_t>(queries) * s.query_heads * s.head_dim);
      for (auto& q : rows[f]) q = static_cast<C>(normal(rng));
      for (int i = 0; i < queries; ++i) offsets[f].push_back(i);
    }
    const std::ptrdiff_t head_stride = static_cast<std::ptrdiff_t>(capacity) * s.head_dim;
    segments[0] = ChunkSegment<T>{keys.get(), values.get(), s.head_dim, head_stride, kSinks, kSinkFrame,
                                  kSinks + cached};  // query 0 at cache position kSinks + cached
    segments[1] = ChunkSegment<T>{keys.get() + kSinks * s.head_dim, values.get() + kSinks * s.head_dim, s.head_dim,
                                  head_stride, cached + queries, kStreamFrame, cached};
    args.num_queries = queries;
    args.num_query_heads = s.query_heads;
    args.num_kv_heads = s.kv_heads;
    args.head_dim = s.head_dim;
    args.scale = static_cast<C>(1.0 / std::sqrt(static_cast<double>(s.head_dim)));
    for (int f = 0; f < kNumFrames; ++f) {
      args.frames[f].rows = rows[f].data();
      args.frames[f].offsets = offsets[f].data();
    }
    args.segments = segments;
    args.num_segments = 2;
    decode_segments.resize(static_cast<std::size_t>(queries) * 2);
    decode_args.resize(static_cast<std::size_t>(queries));
    for (int i = 0; i < queries; ++i) {
      AttentionArgs<T>& a = decode_args[static_cast<std::size_t>(i)];
      a.num_query_heads = s.query_heads;
      a.num_kv_heads = s.kv_heads;
      a.head_dim = s.head_dim;
      a.scale = args.scale;
      a.segments = &decode_segments[static_cast<std::size_t>(i) * 2];
      a.num_segments = 0;
      for (int seg = 0; seg < 2; ++seg) {
        const auto [first, last] = args.visible(segments[seg], i);
        if (first >= last) continue;
        KVSegment<T> k;
        k.query = args.query_row(segments[seg].frame, i, 0);
        k.keys = segments[seg].keys + first * segments[seg].token_stride;
        k.values = segments[seg].values + first * segments[seg].token_stride;
        k.token_stride = segments[seg].token_stride;
        k.head_stride = segments[seg].head_stride;
        k.length = last - first;
        k.query_distance = static_cast<int>(args.distance(segments[seg], i, first));
        decode_segments[static_cast<std::size_t>(i) * 2 + a.num_segments++] = k;
        visible += last - first;
      }
    }
  }
  double flops() const { return 4.0 * shape.query_heads * shape.head_dim * visible; }
};

enum class ChunkKernel { kChunk, kDecodeCalls };

/// One chunk call, or C decode calls, each checked once before timing: the
/// chunk against the decode calls' results (every query, 1e-4), and both,
/// for 4 queries, against the double-precision oracle (1e-4).
template <class T>
void chunk_benchmark(benchmark::State& state, Shape shape, int cached, int queries, ChunkKernel which) {
  ChunkProblem<T> p(shape, cached, queries);
  const int rows = shape.query_heads * shape.head_dim;
  std::vector<float> out(static_cast<std::size_t>(queries) * rows), lse(static_cast<std::size_t>(queries) * shape.query_heads);
  std::vector<float> decode_out(out.size()), decode_lse(lse.size());
  const CpuKernel kernel;
  const ChunkOutput<float> chunk_out{out.data(), rows, shape.head_dim, lse.data()};
  auto run_chunk = [&] { kernel(p.args, chunk_out); };
  auto run_decode = [&] {
    for (int i = 0; i < queries; ++i) {
      kernel(p.decode_args[static_cast<std::size_t>(i)],
             AttentionOutput<float>{decode_out.data() + static_cast<std::ptrdiff_t>(i) * rows, shape.head_dim,
                                    decode_lse.data() + static_cast<std::ptrdiff_t>(i) * shape.query_heads});
    }
  };
  run_chunk();
  run_decode();
  const double worst_pair = bench::worst_error(out.data(), shape.head_dim, lse.data(),
                                               std::vector<double>(decode_out.begin(), decode_out.end()),
                                               std::vector<double>(decode_lse.begin(), decode_lse.end()),
                                               queries * shape.query_heads, shape.head_dim, 1e-4);
  double worst_oracle = 0;
  for (int i : {0, queries / 3, queries / 2, queries - 1}) {
    std::vector<double> want, want_lse;
    bench::dense_oracle(p.decode_args[static_cast<std::size_t>(i)], want, want_lse);
    const std::ptrdiff_t at = static_cast<std::ptrdiff_t>(i) * rows;
    const std::ptrdiff_t lse_at = static_cast<std::ptrdiff_t>(i) * shape.query_heads;
    worst_oracle = std::max({worst_oracle,
                             bench::worst_error(out.data() + at, shape.head_dim, lse.data() + lse_at, want, want_lse,
                                                shape.query_heads, shape.head_dim, 1e-4),
                             bench::worst_error(decode_out.data() + at, shape.head_dim, decode_lse.data() + lse_at,
                                                want, want_lse, shape.query_heads, shape.head_dim, 1e-4)});
  }
  if (!(worst_pair <= 1.0) || !(worst_oracle <= 1.0)) {
    std::fprintf(stderr, "chunk %s cached=%d C=%d: results differ (chunk vs decode %.3g, vs oracle %.3g x tolerance)\n",
                 shape_name(shape).c_str(), cached, queries, worst_pair, worst_oracle);
    std::abort();
  }
  for (auto _ : state) {
    if (which == ChunkKernel::kChunk) {
      run_chunk();
    } else {
      run_decode();
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(decode_out.data());
    benchmark::ClobberMemory();
  }
  // GFLOPs: flops per CPU second (QK and PV, one multiply-add = 2);
  // fma_fraction: of the one-core FMA peak measured by this binary
  // (probe/fma_peak, also in thread CPU time).
  state.counters["GFLOPs"] = benchmark::Counter(p.flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["fma_fraction"] =
      benchmark::Counter(p.flops() / bench::fma_peak(), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["queries"] = queries;
}

template <class T>
void register_chunks(const std::vector<Shape>& shapes, const std::vector<int>& cached, const std::vector<int>& chunks) {
  for (const Shape& shape : shapes) {
    for (int n : cached) {
      for (int c : chunks) {
        for (ChunkKernel which : {ChunkKernel::kChunk, ChunkKernel::kDecodeCalls}) {
          std::ostringstream name;
          name << (which == ChunkKernel::kChunk ? "chunk/cpu/" : "chunk/decode_calls/")
               << detail::ElementTraits<T>::kName << "/" << shape_name(shape) << "/cached:" << n << "/C:" << c;
          // One thread, compute-bound: timed in CPU time, as the FMA peak.
          auto* b = benchmark::RegisterBenchmark(name.str().c_str(), chunk_benchmark<T>, shape, n, c, which);
          b->Unit(benchmark::kMillisecond);
          bench::add_best_of_n(b);
        }
      }
    }
  }
}

// ---- the key-layout experiment (issue 14) ------------------------------------

/// The score phase alone (QK^T for every KV head's group), from keys stored
/// row-major as the cache stores them (CpuKernel's decode micro-kernel) or
/// from the same keys tiled K^T per vector of tokens (a layout the cache
/// would have to adopt). Float keys; values, softmax and everything else
/// are the same in both layouts, so this is the part a layout could change.
enum class Layout { kRowMajor, kTiled };

void layout_benchmark(benchmark::State& state, Shape shape, int length, Layout layout) {
  const int lanes = bench::with_variant(bench::kernel_variant(), [](auto v) { return decltype(v)::kVectorLanes; });
  const int d = shape.head_dim, g = shape.query_heads / shape.kv_heads;
  const std::size_t per_head = static_cast<std::size_t>(length) * d;
  AlignedBuffer<float> keys(per_head * shape.kv_heads), tiled(per_head * shape.kv_heads);
  std::vector<float> query(static_cast<std::size_t>(shape.query_heads) * d);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::size_t i = 0; i < keys.size; ++i) keys.get()[i] = normal(rng);
  for (auto& q : query) q = normal(rng) / std::sqrt(static_cast<float>(d));
  // K^T per tile of `lanes` tokens: tiled[kv][tile][dim][lane] = key[kv][tile * lanes + lane][dim].
  for (int kv = 0; kv < shape.kv_heads; ++kv) {
    for (int t = 0; t < length; ++t) {
      for (int i = 0; i < d; ++i) {
        tiled.get()[kv * per_head + (static_cast<std::size_t>(t / lanes) * d + i) * lanes + t % lanes] =
            keys.get()[kv * per_head + static_cast<std::size_t>(t) * d + i];
      }
    }
  }
  std::vector<float> scores(static_cast<std::size_t>(g) * std::max(length, 64));
  std::vector<float> check(static_cast<std::size_t>(g) * length);
  auto run = [&](int kv, float* out) {
    const float* q = query.data() + static_cast<std::ptrdiff_t>(kv) * g * d;
    bench::with_variant(bench::kernel_variant(), [&](auto v) {
      if (layout == Layout::kTiled) {
        decltype(v)::tiled(q, g, d, tiled.get() + kv * per_head, length, out);
      } else {
        decltype(v)::rowmajor(q, g, d, keys.get() + kv * per_head, length, out);
      }
    });
  };
  // Check: the tiled scores of the last KV head against a double dot product.
  bench::with_variant(bench::kernel_variant(), [&](auto v) {
    decltype(v)::tiled(query.data() + static_cast<std::ptrdiff_t>(shape.kv_heads - 1) * g * d, g, d,
                       tiled.get() + (shape.kv_heads - 1) * per_head, length, check.data());
  });
  for (int h = 0; h < g; ++h) {
    for (int t = 0; t < length; t += 97) {
      double dot = 0;
      for (int i = 0; i < d; ++i) {
        dot += double(query[(static_cast<std::size_t>(shape.kv_heads - 1) * g + h) * d + i]) *
               keys.get()[(shape.kv_heads - 1) * per_head + static_cast<std::size_t>(t) * d + i];
      }
      if (std::abs(check[static_cast<std::size_t>(h) * length + t] - dot) > 1e-4 * (1 + std::abs(dot))) {
        std::fprintf(stderr, "layout experiment: tiled score differs at head %d token %d\n", h, t);
        std::abort();
      }
    }
  }
  for (auto _ : state) {
    for (int kv = 0; kv < shape.kv_heads; ++kv) run(kv, scores.data());
    benchmark::DoNotOptimize(scores.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * shape.query_heads * static_cast<double>(length) * d;
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(keys.size * sizeof(float)));
}

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = bench::take_smoke_flag(argc, argv);
  check_oracle();
  const std::vector<Shape> shapes = {{32, 8, 128}, {8, 8, 64}, {64, 8, 128}};
  const std::vector<int> lengths =
      smoke ? std::vector<int>{256, 2048} : std::vector<int>{256, 1024, 4096, 16384, 65536};

  benchmark::RegisterBenchmark("probe/fma_peak", probe_fma)->Iterations(1);
  for (const Shape& shape : shapes) {
    for (int length : lengths) {
      for (std::size_t element : {std::size_t{4}, std::size_t{2}}) {
        const std::int64_t bytes = 2LL * shape.kv_heads * length * shape.head_dim * static_cast<std::int64_t>(element);
        if (shape.query_heads == 64) continue;  // same K/V sizes as 32/8/128
        benchmark::RegisterBenchmark("probe/read_bandwidth", probe_bandwidth)->Arg(bytes)->UseRealTime();
      }
    }
  }
  register_type<float>(shapes, lengths);
  register_type<Eigen::half>(shapes, lengths);
  register_type<Eigen::bfloat16>(shapes, lengths);
  const std::vector<Shape> chunk_shapes = {{32, 8, 128}, {64, 8, 128}};
  const std::vector<int> cached = smoke ? std::vector<int>{256} : std::vector<int>{1024, 4096, 16384};
  const std::vector<int> chunk_sizes = smoke ? std::vector<int>{16} : std::vector<int>{64, 256, 1024};
  register_chunks<float>(chunk_shapes, cached, chunk_sizes);
  register_chunks<Eigen::half>(chunk_shapes, cached, chunk_sizes);
  for (const Shape& shape : shapes) {
    for (int length : smoke ? std::vector<int>{1024} : std::vector<int>{1024, 16384}) {
      for (Layout layout : {Layout::kRowMajor, Layout::kTiled}) {
        std::ostringstream name;
        name << "layout/scores/" << (layout == Layout::kTiled ? "tiled" : "row_major") << "/float/"
             << shape_name(shape) << "/len:" << length;
        auto* b = benchmark::RegisterBenchmark(name.str().c_str(), layout_benchmark, shape, length, layout);
        b->UseRealTime()->Unit(benchmark::kMicrosecond);
        bench::add_best_of_n(b);
      }
    }
  }

  benchmark::AddCustomContext("sinkkv_vector_path", instruction_set_name(CpuKernel{}.instruction_set()));
  benchmark::AddCustomContext("sinkkv_parallel_threads", "2 (caller + 1 pool worker)");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
