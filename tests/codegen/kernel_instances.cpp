// CpuKernel instantiated for every storage type the vector path takes, to be
// compiled to assembly by prefetch_check.cmake.
#include <sinkkv/kernels/cpu.hpp>

#include <Eigen/Core>

template void sinkkv::CpuKernel::operator()(const AttentionArgs<float>&, const AttentionOutput<float>&) const;
template void sinkkv::CpuKernel::operator()(const AttentionArgs<Eigen::half>&, const AttentionOutput<float>&) const;
template void sinkkv::CpuKernel::operator()(const AttentionArgs<Eigen::bfloat16>&,
                                            const AttentionOutput<float>&) const;
