// sinkkv: attention-sink KV cache for endless streaming (StreamingLLM).
//
// Include this one header. See README.md for the semantics and a usage
// example, docs/design.md for the invariants.
#pragma once

#include "alibi.hpp"
#include "attention.hpp"
#include "cache.hpp"
#include "config.hpp"
#include "error.hpp"
#include "kernels/cpu.hpp"
#include "kernels/parallel.hpp"
#include "kernels/reference.hpp"
#include "pool.hpp"
#include "positions.hpp"
#include "rope.hpp"
#include "views.hpp"

#define SINKKV_VERSION_MAJOR 0
#define SINKKV_VERSION_MINOR 1
#define SINKKV_VERSION_PATCH 0
