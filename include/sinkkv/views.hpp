// sinkkv: non-owning views of per-head rows, in the engine's own layout.
//
// One token: HeadsView, element d of head h at data[h * head_stride + d *
// element_stride]. A chunk of tokens: TokensView, token i at data + i *
// token_stride. A [tokens, heads, head_dim] tensor gives head_stride =
// head_dim, token_stride = heads * head_dim; a [heads, tokens, head_dim]
// tensor gives head_stride = tokens * head_dim, token_stride = head_dim.
// Views are checked where they are used (shape, null, strides), never here.
#pragma once

#include <cstddef>
#include <limits>

#include <Eigen/Core>

#include "detail/abi_namespace.hpp"

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// The default stride argument of the view makers: packed rows.
inline constexpr std::ptrdiff_t kPacked = std::numeric_limits<std::ptrdiff_t>::min();

/// Read-only rows of `num_heads` heads for one token: element d of head h is
/// data[h * head_stride + d * element_stride]. Never owns memory.
template <class Scalar>
struct HeadsView {
  const Scalar* data = nullptr;
  int num_heads = 0;
  int head_dim = 0;
  std::ptrdiff_t head_stride = 0;
  std::ptrdiff_t element_stride = 1;

  const Scalar& operator()(int head, int d) const { return data[head * head_stride + d * element_stride]; }
};

/// Writable rows, head_dim contiguous: element d of head h is
/// data[h * head_stride + d].
template <class Scalar>
struct MutableHeadsView {
  Scalar* data = nullptr;
  int num_heads = 0;
  int head_dim = 0;
  std::ptrdiff_t head_stride = 0;

  Scalar& operator()(int head, int d) const { return data[head * head_stride + d]; }
};

/// Read-only rows of `num_tokens` consecutive tokens (a chunk): element d of
/// head h of token i is data[i * token_stride + h * head_stride + d *
/// element_stride].
template <class Scalar>
struct TokensView {
  const Scalar* data = nullptr;
  int num_tokens = 0;
  int num_heads = 0;
  int head_dim = 0;
  std::ptrdiff_t token_stride = 0;
  std::ptrdiff_t head_stride = 0;
  std::ptrdiff_t element_stride = 1;

  HeadsView<Scalar> token(int i) const {
    return HeadsView<Scalar>{data + i * token_stride, num_heads, head_dim, head_stride, element_stride};
  }
};

/// Writable rows of a chunk, head_dim contiguous: element d of head h of
/// token i is data[i * token_stride + h * head_stride + d].
template <class Scalar>
struct MutableTokensView {
  Scalar* data = nullptr;
  int num_tokens = 0;
  int num_heads = 0;
  int head_dim = 0;
  std::ptrdiff_t token_stride = 0;
  std::ptrdiff_t head_stride = 0;

  MutableHeadsView<Scalar> token(int i) const {
    return MutableHeadsView<Scalar>{data + i * token_stride, num_heads, head_dim, head_stride};
  }
};

/// One token's rows, packed as [num_heads, head_dim] unless strides are given.
template <class Scalar>
HeadsView<Scalar> heads_view(const Scalar* data, int num_heads, int head_dim, std::ptrdiff_t head_stride = kPacked,
                             std::ptrdiff_t element_stride = 1) {
  return HeadsView<Scalar>{data, num_heads, head_dim,
                           head_stride == kPacked ? static_cast<std::ptrdiff_t>(head_dim) * element_stride : head_stride,
                           element_stride};
}

/// One token's writable rows (an attention output), packed as [num_heads,
/// head_dim] unless a head stride is given.
template <class Scalar>
MutableHeadsView<Scalar> output_view(Scalar* data, int num_heads, int head_dim, std::ptrdiff_t head_stride = kPacked) {
  return MutableHeadsView<Scalar>{data, num_heads, head_dim, head_stride == kPacked ? head_dim : head_stride};
}

/// A chunk's rows, packed as [num_tokens, num_heads, head_dim] unless
/// strides are given (a [heads, tokens, head_dim] tensor: token_stride =
/// head_dim, head_stride = num_tokens * head_dim).
template <class Scalar>
TokensView<Scalar> tokens_view(const Scalar* data, int num_tokens, int num_heads, int head_dim,
                               std::ptrdiff_t token_stride = kPacked, std::ptrdiff_t head_stride = kPacked,
                               std::ptrdiff_t element_stride = 1) {
  const std::ptrdiff_t heads =
      head_stride == kPacked ? static_cast<std::ptrdiff_t>(head_dim) * element_stride : head_stride;
  const std::ptrdiff_t tokens = token_stride == kPacked ? static_cast<std::ptrdiff_t>(num_heads) * heads : token_stride;
  return TokensView<Scalar>{data, num_tokens, num_heads, head_dim, tokens, heads, element_stride};
}

/// A chunk's writable rows (attention outputs), packed as [num_tokens,
/// num_heads, head_dim] unless strides are given.
template <class Scalar>
MutableTokensView<Scalar> tokens_output_view(Scalar* data, int num_tokens, int num_heads, int head_dim,
                                             std::ptrdiff_t token_stride = kPacked,
                                             std::ptrdiff_t head_stride = kPacked) {
  const std::ptrdiff_t heads = head_stride == kPacked ? head_dim : head_stride;
  return MutableTokensView<Scalar>{data, num_tokens, num_heads, head_dim,
                                   token_stride == kPacked ? static_cast<std::ptrdiff_t>(num_heads) * heads
                                                           : token_stride,
                                   heads};
}

/// A chunk held in an Eigen matrix, map or block of shape [num_tokens,
/// num_heads * head_dim] (either storage order): row i is token i.
template <class Derived>
TokensView<typename Derived::Scalar> tokens_view(const Eigen::DenseBase<Derived>& matrix, int num_heads) {
  static_assert(bool(Eigen::internal::traits<Derived>::Flags & Eigen::DirectAccessBit),
                "sinkkv::tokens_view: pass a matrix, map or block (direct access); evaluate expressions first");
  const Derived& m = matrix.derived();
  const int head_dim = num_heads > 0 ? static_cast<int>(m.cols() / num_heads) : 0;
  // A column count that is not heads x head_dim gives head_dim 0 or a
  // mismatch, which the cache reports with the expected shape.
  return TokensView<typename Derived::Scalar>{
      m.data(),
      m.rows() <= std::numeric_limits<int>::max() ? static_cast<int>(m.rows()) : -1,
      num_heads,
      num_heads > 0 && m.cols() % num_heads == 0 ? head_dim : -1,
      static_cast<std::ptrdiff_t>(m.rowStride()),
      static_cast<std::ptrdiff_t>(head_dim) * static_cast<std::ptrdiff_t>(m.colStride()),
      static_cast<std::ptrdiff_t>(m.colStride())};
}

/// Writable Eigen form of tokens_output_view: a row-major [num_tokens,
/// num_heads * head_dim] matrix, map or block (taken by const reference so
/// that temporaries such as `m.topRows(c)` bind; written through).
template <class Derived>
MutableTokensView<typename Derived::Scalar> tokens_output_view(const Eigen::DenseBase<Derived>& matrix,
                                                               int num_heads) {
  static_assert(bool(Eigen::internal::traits<Derived>::Flags & Eigen::LvalueBit),
                "sinkkv::tokens_output_view: the output must be writable");
  static_assert(bool(Eigen::internal::traits<Derived>::Flags & Eigen::DirectAccessBit),
                "sinkkv::tokens_output_view: pass a matrix, map or block (direct access)");
  static_assert(bool(Derived::IsRowMajor),
                "sinkkv::tokens_output_view: the output must be row-major (each token's rows contiguous)");
  auto& m = const_cast<Derived&>(matrix.derived());
  const int head_dim = num_heads > 0 && m.cols() % num_heads == 0 ? static_cast<int>(m.cols() / num_heads) : -1;
  return MutableTokensView<typename Derived::Scalar>{
      m.data(),
      m.rows() <= std::numeric_limits<int>::max() ? static_cast<int>(m.rows()) : -1,
      num_heads,
      head_dim,
      static_cast<std::ptrdiff_t>(m.rowStride()),
      static_cast<std::ptrdiff_t>(head_dim)};
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv
