// The unit built with the default flags (see units.hpp).
#define TWO_FLAG_SETS_UNIT generic
#include "unit.inc"
