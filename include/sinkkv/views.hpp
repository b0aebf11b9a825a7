// sinkkv: non-owning views of one token's per-head rows, in the engine's own
// layout. A [tokens, heads, head_dim] tensor gives head_stride = head_dim; a
// [heads, tokens, head_dim] tensor gives head_stride = tokens * head_dim.
#pragma once

#include <cstddef>

namespace sinkkv {

/// Read-only rows of `num_heads` heads for one token: element d of head h is
/// data[h * head_stride + d * element_stride]. Never owns memory.
template <class Scalar>
struct HeadsView {
  const Scalar* data = nullptr;
  int num_heads = 0;
  int head_dim = 0;
  std::ptrdiff_t head_stride = 0;
  std::ptrdiff_t element_stride = 1;

  const Scalar& operator()(int head, int d) const {
    return data[head * head_stride + d * element_stride];
  }
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

/// Rows packed as [num_heads, head_dim] unless a head stride is given.
template <class Scalar>
HeadsView<Scalar> heads_view(const Scalar* data, int num_heads, int head_dim,
                             std::ptrdiff_t head_stride = -1, std::ptrdiff_t element_stride = 1) {
  return HeadsView<Scalar>{data, num_heads, head_dim, head_stride < 0 ? head_dim * element_stride : head_stride,
                           element_stride};
}

/// Writable rows (an attention output) packed as [num_heads, head_dim] unless
/// a head stride is given.
template <class Scalar>
MutableHeadsView<Scalar> output_view(Scalar* data, int num_heads, int head_dim, std::ptrdiff_t head_stride = -1) {
  return MutableHeadsView<Scalar>{data, num_heads, head_dim, head_stride < 0 ? head_dim : head_stride};
}

}  // namespace sinkkv
