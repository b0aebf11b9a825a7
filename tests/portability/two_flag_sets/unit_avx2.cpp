// The unit built with -mavx2 -mfma -mf16c (see units.hpp).
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "unit_avx2.cpp must be built with -mavx2 -mfma -mf16c"
#endif
#define TWO_FLAG_SETS_UNIT avx2
#include "unit.inc"
