// toy: one forward pass for many sequences at once (a server's decode step),
// their K/V in one sinkkv::SequencePool.
//
// Each sequence of the batch brings its next tokens: one while it decodes,
// a chunk of its prompt while it prefills. Their rows are stacked into one
// [rows, dim] activation matrix, so every projection is one matrix-matrix
// product over the whole batch (the weights are read once per step instead
// of once per token), and each layer appends every sequence's k, v rows to
// its own pages and attends the whole batch in one
// SequencePool::attend_batch call. Positions, RoPE and eviction are each
// sequence's own, inside the pool.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <Eigen/Core>
#include <sinkkv/sinkkv.hpp>

#include "checkpoint.hpp"
#include "error.hpp"
#include "model.hpp"

namespace toy {

/// Products out[rows, n] (+)= in[rows, k] * W^T, with W [n, k] row-major (how
/// checkpoints store weights), cut into tiles of at most kTileRows x
/// kTileColumns outputs that run as tasks on a sinkkv::ThreadPool.
///
/// Why tiles: Eigen packs each product's operands into blocking buffers,
/// which it puts on the stack when they fit in EIGEN_STACK_ALLOCATION_LIMIT
/// (128 KiB) and mallocs otherwise; a [64, 128] x [128, 384] product already
/// mallocs. A tile also cuts the depth into blocks of at most kTileDepth,
/// each one Eigen product added to the last: Eigen's own depth block follows
/// the L1 size it reads from the CPU (about 700 floats for SSE2 code on a
/// 48 KiB L1), too large for the stack at 64 rows, while 64 x kTileDepth
/// floats (64 KiB) always fit. So a step allocates nothing. Tiles are also
/// the unit of parallel work, and their cut depends on the shapes only: the
/// results do not depend on the number of threads.
class TiledProducts {
 public:
  static constexpr int kTileRows = 64;
  static constexpr int kTileColumns = 64;
  static constexpr int kTileDepth = 256;

  /// One product; the input and output rows may have any stride.
  struct Product {
    const float* input = nullptr;  // [rows, depth], row stride input_stride
    std::ptrdiff_t input_stride = 0;
    const float* weight = nullptr;  // [columns, depth], row-major
    int columns = 0;
    int depth = 0;
    float* output = nullptr;  // [rows, columns], row stride output_stride
    std::ptrdiff_t output_stride = 0;
    bool accumulate = false;  // out += (a residual add) instead of out =
  };

  /// Runs up to kMaxProducts products of `rows` rows together (their tiles
  /// share one pass over `threads`; nullptr runs on the caller). No
  /// allocation.
  static constexpr int kMaxProducts = 3;
  void run(const Product* products, int count, int rows, sinkkv::ThreadPool* threads) {
    TOY_CHECK(count >= 1 && count <= kMaxProducts, count << " products at once outside [1, " << kMaxProducts << "]");
    const int row_tiles = (rows + kTileRows - 1) / kTileRows;
    int total = 0;
    for (int p = 0; p < count; ++p) {
      first_task_[p] = total;
      total += row_tiles * ((products[p].columns + kTileColumns - 1) / kTileColumns);
    }
    first_task_[count] = total;
    auto tile = [&](int task) {
      int p = 0;
      while (task >= first_task_[p + 1]) ++p;
      const int local = task - first_task_[p];
      run_tile(products[p], rows, (local % row_tiles) * kTileRows, (local / row_tiles) * kTileColumns);
    };
    if (threads == nullptr || total <= 1) {
      for (int task = 0; task < total; ++task) tile(task);
      return;
    }
    sinkkv::IndexTask task(tile);
    threads->run(total, task);
  }

 private:
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;
  using Map = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;

  static void run_tile(const Product& p, int rows, int row, int column) {
    const int tile_rows = std::min(kTileRows, rows - row);
    const int tile_columns = std::min(kTileColumns, p.columns - column);
    Map out(p.output + row * p.output_stride + column, tile_rows, tile_columns, Eigen::OuterStride<>(p.output_stride));
    for (int first = 0; first < p.depth; first += kTileDepth) {
      const int depth = std::min(kTileDepth, p.depth - first);
      const ConstMap in(p.input + row * p.input_stride + first, tile_rows, depth, Eigen::OuterStride<>(p.input_stride));
      const ConstMap weight(p.weight + static_cast<std::ptrdiff_t>(column) * p.depth + first, tile_columns, depth,
                            Eigen::OuterStride<>(p.depth));
      if (p.accumulate || first > 0) {
        out.noalias() += in * weight.transpose();
      } else {
        out.noalias() = in * weight.transpose();
      }
    }
  }

  int first_task_[kMaxProducts + 1] = {};
};

/// One sequence's part of a batched pass: `num_tokens` consecutive tokens of
/// its stream (1 while decoding, a chunk of its prompt while prefilling).
struct BatchEntry {
  sinkkv::SequenceId sequence;
  const std::int32_t* tokens = nullptr;  // [num_tokens]
  int num_tokens = 1;
};

/// The forward pass of `Transformer::forward_chunk`, for up to max_entries
/// sequences of one SequencePool at once, up to max_rows tokens in all.
/// Holds a reference to the weights and its activations, allocated by the
/// constructor; forward() allocates nothing.
///
/// A sequence's logits equal what a toy::Decoder over a SinkKVCache with the
/// pool's configuration gives for the same stream, up to float summation
/// order in the products (the attention is the same arithmetic: CpuKernel
/// on the same rows; attend_batch splits a long cache into token ranges only
/// when the batch has fewer tasks than threads).
class BatchedTransformer {
 public:
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  BatchedTransformer(const ModelWeights& weights, int max_rows, int max_entries)
      : w_(weights), max_rows_(max_rows), max_entries_(max_entries) {
    const ModelConfig& c = w_.config;
    c.validate();
    TOY_CHECK(
        max_entries >= 1 && max_rows >= max_entries && max_rows <= (1 << 20),
        "batch of " << max_entries << " sequences and " << max_rows << " rows: need 1 <= sequences <= rows <= 2^20");
    x_.setZero(max_rows, c.dim);
    xb_.setZero(max_rows, c.dim);
    q_.setZero(max_rows, c.dim);
    k_.setZero(max_rows, c.kv_dim());
    v_.setZero(max_rows, c.kv_dim());
    att_.setZero(max_rows, c.dim);
    hb_.setZero(max_rows, c.hidden_dim);
    hb2_.setZero(max_rows, c.hidden_dim);
    inverse_rms_.setZero(max_rows);
    last_.setZero(max_entries, c.dim);
    last_xb_.setZero(max_entries, c.dim);
    logits_.setZero(max_entries, c.vocab_size);
    items_.resize(static_cast<std::size_t>(max_entries));
  }
  BatchedTransformer(const BatchedTransformer&) = delete;
  BatchedTransformer& operator=(const BatchedTransformer&) = delete;

  const ModelConfig& config() const { return w_.config; }
  int max_rows() const { return max_rows_; }
  int max_entries() const { return max_entries_; }

  /// Runs every entry's tokens through every layer, their K/V going to
  /// `pool` (whose configuration must match the model: layers, heads,
  /// head size), attention on `threads` (nullptr: the caller alone).
  /// Returns the logits after each entry's last token: [count, vocab_size],
  /// row-major, valid until the next call. Checks the batch (sizes, tokens,
  /// live ids, pages for every sequence's step) and throws before anything
  /// changes. No allocation.
  const float* forward(const BatchEntry* entries, int count, sinkkv::SequencePool<float>& pool,
                       sinkkv::ThreadPool* threads) {
    const ModelConfig& c = w_.config;
    const int rows = check_batch(entries, count, pool);
    const std::ptrdiff_t d = c.dim, kv = c.kv_dim();
    const int hd = c.head_dim();
    for (int i = 0, row = 0; i < count; ++i) {
      for (int t = 0; t < entries[i].num_tokens; ++t, ++row) {
        x_.row(row) = Eigen::Map<const Eigen::RowVectorXf>(w_.token_embedding.data() + entries[i].tokens[t] * d, d);
      }
    }
    auto x = x_.topRows(rows);
    auto xb = xb_.topRows(rows);
    const auto product = [&](const RowMatrix& in, const std::vector<float>& weight, int layer, int columns,
                             RowMatrix& out, bool accumulate) {
      const std::ptrdiff_t depth = in.cols();
      return TiledProducts::Product{
          in.data(),  depth,     weight.data() + layer * columns * depth, columns, static_cast<int>(depth), out.data(),
          out.cols(), accumulate};
    };
    for (int l = 0; l < c.num_layers; ++l) {
      rms_norm_rows(x, w_.rms_att.data() + l * d, inverse_rms_, xb);
      const TiledProducts::Product qkv[] = {product(xb_, w_.wq, l, c.dim, q_, false),
                                            product(xb_, w_.wk, l, c.kv_dim(), k_, false),
                                            product(xb_, w_.wv, l, c.kv_dim(), v_, false)};
      products_.run(qkv, 3, rows, threads);

      // Each sequence's k, v rows to its own pages, then one attention call
      // for the whole batch.
      for (int i = 0, row = 0; i < count; row += entries[i].num_tokens, ++i) {
        const int n = entries[i].num_tokens;
        pool.append(entries[i].sequence, l, sinkkv::tokens_view(k_.data() + row * kv, n, c.num_kv_heads, hd),
                    sinkkv::tokens_view(v_.data() + row * kv, n, c.num_kv_heads, hd));
        items_[static_cast<std::size_t>(i)] = sinkkv::BatchItem<float, float>{
            entries[i].sequence, sinkkv::tokens_view(q_.data() + row * d, n, c.num_heads, hd),
            sinkkv::tokens_output_view(att_.data() + row * d, n, c.num_heads, hd)};
      }
      pool.attend_batch(l, items_.data(), count, kernel_, threads);

      const TiledProducts::Product wo[] = {product(att_, w_.wo, l, c.dim, x_, true)};
      products_.run(wo, 1, rows, threads);
      rms_norm_rows(x, w_.rms_ffn.data() + l * d, inverse_rms_, xb);
      const TiledProducts::Product up[] = {product(xb_, w_.w1, l, c.hidden_dim, hb_, false),
                                           product(xb_, w_.w3, l, c.hidden_dim, hb2_, false)};
      products_.run(up, 2, rows, threads);
      auto hb = hb_.topRows(rows).array();
      hb = hb / (1.0f + (-hb).exp()) * hb2_.topRows(rows).array();  // SwiGLU: silu(w1 x) * w3 x
      const TiledProducts::Product down[] = {product(hb_, w_.w2, l, c.dim, x_, true)};
      products_.run(down, 1, rows, threads);
    }
    // Logits for each entry's last token only.
    for (int i = 0, row = 0; i < count; ++i) {
      row += entries[i].num_tokens;
      last_.row(i) = x_.row(row - 1);
    }
    auto last = last_.topRows(count);
    auto last_xb = last_xb_.topRows(count);
    rms_norm_rows(last, w_.rms_final.data(), inverse_rms_, last_xb);
    const TiledProducts::Product classifier[] = {TiledProducts::Product{
        last_xb_.data(), d, w_.classifier_data(), c.vocab_size, c.dim, logits_.data(), c.vocab_size, false}};
    products_.run(classifier, 1, count, threads);
    return logits_.data();
  }

 private:
  /// The batch's rows; throws toy::Error for a batch the pass cannot take.
  int check_batch(const BatchEntry* entries, int count, const sinkkv::SequencePool<float>& pool) const {
    const ModelConfig& c = w_.config;
    const sinkkv::CacheConfig& cache = pool.config();
    TOY_CHECK(cache.num_layers == c.num_layers && cache.num_kv_heads == c.num_kv_heads &&
                  cache.query_heads() == c.num_heads && cache.head_dim == c.head_dim(),
              "the pool's sequences (" << cache.num_layers << " layers, " << cache.query_heads() << " / "
                                       << cache.num_kv_heads << " KV heads of " << cache.head_dim
                                       << ") do not fit the model (" << c << ")");
    TOY_CHECK(count >= 1 && count <= max_entries_,
              "batch of " << count << " sequences outside [1, " << max_entries_ << "]");
    int rows = 0;
    std::int64_t pages = 0;
    for (int i = 0; i < count; ++i) {
      const BatchEntry& e = entries[i];
      TOY_CHECK(e.num_tokens >= 1 && e.num_tokens <= cache.max_chunk,
                "batch entry " << i << ": " << e.num_tokens << " tokens outside [1, the pool's max_chunk "
                               << cache.max_chunk << "]");
      TOY_CHECK(e.tokens != nullptr, "batch entry " << i << ": no tokens");
      for (int t = 0; t < e.num_tokens; ++t) {
        TOY_CHECK(e.tokens[t] >= 0 && e.tokens[t] < c.vocab_size,
                  "batch entry " << i << ": token " << e.tokens[t] << " outside [0, " << c.vocab_size << ")");
      }
      TOY_CHECK(pool.contains(e.sequence),
                "batch entry " << i << ": sequence " << e.sequence.value << " is not in the pool");
      for (int j = 0; j < i; ++j) {
        TOY_CHECK(entries[j].sequence != e.sequence,
                  "batch entries " << j << " and " << i << " are both sequence " << e.sequence.value);
      }
      rows += e.num_tokens;
      TOY_CHECK(rows <= max_rows_, "batch of more than " << max_rows_ << " tokens");
      pages += pool.pages_needed(e.sequence, e.num_tokens);
    }
    TOY_CHECK(pages <= pool.free_pages(), "the batch's step needs " << pages << " more pages, but " << pool.free_pages()
                                                                    << " of " << pool.max_pages() << " are free");
    return rows;
  }

  const ModelWeights& w_;
  int max_rows_;
  int max_entries_;
  sinkkv::CpuKernel kernel_;
  TiledProducts products_;
  RowMatrix x_;                  // [max_rows, dim] residual stream, one row per token of the batch
  RowMatrix xb_;                 // [max_rows, dim] normalised input of a block
  RowMatrix q_;                  // [max_rows, num_heads * head_dim]
  RowMatrix k_;                  // [max_rows, num_kv_heads * head_dim]
  RowMatrix v_;                  // [max_rows, num_kv_heads * head_dim]
  RowMatrix att_;                // [max_rows, num_heads * head_dim] attention output
  RowMatrix hb_;                 // [max_rows, hidden_dim]
  RowMatrix hb2_;                // [max_rows, hidden_dim]
  Eigen::VectorXf inverse_rms_;  // [max_rows]
  RowMatrix last_;               // [max_entries, dim] each entry's last row
  RowMatrix last_xb_;            // [max_entries, dim]
  RowMatrix logits_;             // [max_entries, vocab_size]
  std::vector<sinkkv::BatchItem<float, float>> items_;  // [max_entries] attend_batch's items
};

}  // namespace toy
