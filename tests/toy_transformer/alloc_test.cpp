// The decode path allocates nothing: Decoder::step() under every policy,
// counted at malloc itself (operator new and Eigen's aligned_malloc both end
// there), after construction and a warm-up token.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "reference_model.hpp"
#include "toy/model.hpp"
#include "toy/sampler.hpp"

namespace {
bool counting = false;
std::size_t allocations = 0;
void count() {
  if (counting) ++allocations;
}
}  // namespace

// glibc: the program's malloc family interposes the C library's.
extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* memory, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);

void* malloc(std::size_t size) {
  count();
  return __libc_malloc(size);
}
void* calloc(std::size_t n, std::size_t size) {
  count();
  return __libc_calloc(n, size);
}
void* realloc(void* memory, std::size_t size) {
  count();
  return __libc_realloc(memory, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) {
  count();
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  count();
  *out = __libc_memalign(alignment, size);
  return *out == nullptr ? 12 /* ENOMEM */ : 0;
}
}

namespace {

using toy::Policy;

class NoAllocation : public ::testing::TestWithParam<toy::PolicySpec> {};

TEST_P(NoAllocation, DecoderStepAndSampling) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8, false), 37);
  toy::Decoder decoder(weights, GetParam());
  toy::Sampler sampler(weights.config.vocab_size, 0.8f, 0.9f, 1);
  int token = sampler.sample(decoder.step(1));  // warm-up
  // Make sure the counter works here at all.
  counting = true;
  std::vector<int>* probe = new std::vector<int>(3);
  counting = false;
  delete probe;
  ASSERT_GE(allocations, 1u) << "malloc interposition is not active";

  allocations = 0;
  counting = true;
  for (int i = 0; i < 3 * GetParam().capacity() + 5; ++i) token = sampler.sample(decoder.step(token));
  counting = false;
  EXPECT_EQ(allocations, 0u) << toy::policy_name(GetParam().policy);
}

INSTANTIATE_TEST_SUITE_P(Policies, NoAllocation,
                         ::testing::Values(toy::PolicySpec{Policy::kDense, 0, 200}, toy::PolicySpec{Policy::kWindow, 0, 9},
                                           toy::PolicySpec{Policy::kSink, 4, 40},
                                           toy::PolicySpec{Policy::kRecompute, 0, 12},
                                           toy::PolicySpec{Policy::kWindowStream, 0, 9},
                                           toy::PolicySpec{Policy::kSinkStream, 4, 40}),
                         [](const ::testing::TestParamInfo<toy::PolicySpec>& info) {
                           std::string name = toy::policy_name(info.param.policy);
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

}  // namespace
