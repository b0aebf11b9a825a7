// How exact an engine's own RoPE stays over long streams: the angle error of
// the common ways engines compute rotary angles, and the score error it
// causes, at stream positions 1e4 .. 1e8. This bounds how exact pre-rotated
// streams can be (issue 13: an engine that rotates its own keys and queries
// hands sinkkv rows that already carry these errors).
//
// Engines modelled (head_dim 128, every pair):
//   float32 product   angle = float(p) * f32_i, rounded to float: Hugging
//                     Face (inv_freq @ position_ids in float32), vLLM's
//                     float32 cos/sin cache.
//   float32 iterative angle_0 = float(p), angle_{i+1} = angle_i * s in float
//                     (s = theta^(-2/d)): ggml / llama.cpp CPU RoPE.
//   double product    angle = double(p) * f64_i, no range reduction; cos/sin
//                     of that double are exact.
//   sinkkv            detail::rotary_angle: exact product, reduction in
//                     extended precision.
// Each engine's error is measured against the exact angle for the engine's
// own frequencies (p * f as real numbers), so it isolates the arithmetic.
// The last column is a different error: an engine rotated rows with float32
// frequencies and sinkkv turns the sink-frame query back by -(p - c) with
// frequencies recomputed in double - the reason to give sinkkv the engine's
// own table (RopeScaling::explicit_frequencies).
//
// Score error: |q.R(angles)k - q.R(exact)k| / (|q| |k|) for Gaussian q, k,
// the worst of 64 positions from p on x 16 random pairs: the relative error
// of a logit (times |q||k|/sqrt(d) it is the logit error itself).
//
// Usage: rope_precision [--smoke] [--theta T]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <sinkkv/detail/angle.hpp>

namespace {

constexpr int kHeadDim = 128;
constexpr int kPairs = kHeadDim / 2;

// x reduced to [-pi, pi] with a two-part 2 pi: exact to ~1e-16 rad for the
// |x| < 2^31 produced here (the product k * kTwoPiHigh is exact in an FMA).
double reduce(double x) {
  const double turns = std::nearbyint(x / sinkkv::detail::kTwoPiHigh);
  double r = std::fma(-turns, sinkkv::detail::kTwoPiHigh, x);
  r = std::fma(-turns, sinkkv::detail::kTwoPiLow, r);
  return std::remainder(r, sinkkv::detail::kTwoPiHigh);
}

// Angle difference on the circle; both already reduced.
double circle_distance(double a, double b) { return std::fabs(std::remainder(a - b, sinkkv::detail::kTwoPiHigh)); }

struct Engine {
  const char* name;
  // Fills angles[i] (reduced) for position p, and exact[i] for the engine's
  // own frequencies.
  void (*angles)(std::uint64_t p, double theta, double* angles, double* exact);
};

void float32_product(std::uint64_t p, double theta, double* angles, double* exact) {
  const float theta_f = static_cast<float>(theta);
  for (int i = 0; i < kPairs; ++i) {
    const float f = 1.0f / std::pow(theta_f, static_cast<float>(2 * i) / static_cast<float>(kHeadDim));
    const float angle = static_cast<float>(p) * f;
    angles[i] = reduce(static_cast<double>(angle));
    exact[i] = sinkkv::detail::rotary_angle(p, static_cast<double>(f));
  }
}

void float32_iterative(std::uint64_t p, double theta, double* angles, double* exact) {
  const float step = std::pow(static_cast<float>(theta), -2.0f / static_cast<float>(kHeadDim));
  float angle = static_cast<float>(p);
  for (int i = 0; i < kPairs; ++i) {
    angles[i] = reduce(static_cast<double>(angle));
    // The engine's frequency is step^i as a real number.
    const double f = static_cast<double>(std::pow(static_cast<long double>(step), i));
    exact[i] = sinkkv::detail::rotary_angle(p, f);
    angle *= step;
  }
}

void double_product(std::uint64_t p, double theta, double* angles, double* exact) {
  for (int i = 0; i < kPairs; ++i) {
    const double f = std::pow(theta, -2.0 * i / kHeadDim);
    angles[i] = reduce(static_cast<double>(p) * f);
    exact[i] = sinkkv::detail::rotary_angle(p, f);
  }
}

void sinkkv_exact(std::uint64_t p, double theta, double* angles, double* exact) {
  for (int i = 0; i < kPairs; ++i) {
    const double f = std::pow(theta, -2.0 * i / kHeadDim);
    angles[i] = sinkkv::detail::rotary_angle(p, f);
    // Independent of the library: p * f split so each part is exact in
    // double (p < 2^27 here, f's top 26 bits), reduced with the same
    // two-part 2 pi.
    int exponent = 0;
    const double mantissa = std::frexp(f, &exponent);
    const double f_high = std::ldexp(std::floor(std::ldexp(mantissa, 26)), exponent - 26);
    const double f_low = f - f_high;
    const double x_high = static_cast<double>(p) * f_high;  // exact
    const double x_low = static_cast<double>(p) * f_low;    // error ~1e-16 * x_low, x_low < 1e-7 x
    const double turns = std::nearbyint((x_high + x_low) / sinkkv::detail::kTwoPiHigh);
    double r = std::fma(-turns, sinkkv::detail::kTwoPiHigh, x_high);
    r += x_low;
    r = std::fma(-turns, sinkkv::detail::kTwoPiLow, r);
    exact[i] = std::remainder(r, sinkkv::detail::kTwoPiHigh);
  }
}

// Not an engine: sinkkv turning by -(p - c) with double frequencies rows an
// engine encoded with float32 frequencies. Error = p * |f64 - f32| per pair
// (c small, so its share is negligible).
void mismatched_frequencies(std::uint64_t p, double theta, double* angles, double* exact) {
  const float theta_f = static_cast<float>(theta);
  for (int i = 0; i < kPairs; ++i) {
    const double f64 = std::pow(theta, -2.0 * i / kHeadDim);
    const double f32 =
        static_cast<double>(1.0f / std::pow(theta_f, static_cast<float>(2 * i) / static_cast<float>(kHeadDim)));
    // Exact angle of the engine's row at p, turned back by p with f64: the
    // residue is p * (f32 - f64), reduced.
    angles[i] = reduce(static_cast<double>(p) * (f32 - f64));
    exact[i] = 0.0;
  }
}

struct Measurement {
  double max_angle_error = 0;
  double max_score_error = 0;
};

Measurement measure(const Engine& engine, std::uint64_t first_position, double theta, int positions, int samples) {
  std::mt19937_64 random(12345);
  std::normal_distribution<double> normal;
  std::vector<double> q(kHeadDim), k(kHeadDim);
  double angles[kPairs], exact[kPairs];
  Measurement result;
  for (int n = 0; n < positions; ++n) {
    engine.angles(first_position + static_cast<std::uint64_t>(n), theta, angles, exact);
    for (int i = 0; i < kPairs; ++i) {
      result.max_angle_error = std::max(result.max_angle_error, circle_distance(angles[i], exact[i]));
    }
    for (int s = 0; s < samples; ++s) {
      for (double& x : q) x = normal(random);
      for (double& x : k) x = normal(random);
      double q_norm = 0, k_norm = 0, difference = 0;
      for (int i = 0; i < kPairs; ++i) {
        const double qa = q[2 * i], qb = q[2 * i + 1], ka = k[2 * i], kb = k[2 * i + 1];
        // q . R(theta) k for one pair = (qa ka + qb kb) cos + (qb ka - qa kb) sin
        const double even = qa * ka + qb * kb, odd = qb * ka - qa * kb;
        difference += even * (std::cos(angles[i]) - std::cos(exact[i])) +
                      odd * (std::sin(angles[i]) - std::sin(exact[i]));
        q_norm += qa * qa + qb * qb;
        k_norm += ka * ka + kb * kb;
      }
      result.max_score_error = std::max(result.max_score_error, std::fabs(difference) / std::sqrt(q_norm * k_norm));
    }
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  double theta = 500000.0;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--smoke") == 0) {
      smoke = true;
    } else if (std::strcmp(argv[a], "--theta") == 0 && a + 1 < argc) {
      theta = std::atof(argv[++a]);
    } else {
      std::fprintf(stderr, "usage: %s [--smoke] [--theta T]\n", argv[0]);
      return 2;
    }
  }
  const Engine engines[] = {{"float32 product (HF, vLLM)", float32_product},
                            {"float32 iterative (ggml)", float32_iterative},
                            {"double product, no reduction", double_product},
                            {"sinkkv rotary_angle", sinkkv_exact},
                            {"float32 rows turned with double freqs", mismatched_frequencies}};
  const std::uint64_t positions[] = {10'000, 100'000, 1'000'000, 4'000'000, 100'000'000};
  const int window = smoke ? 2 : 64;
  const int samples = smoke ? 2 : 16;

  std::printf("RoPE angle error (rad, max over pairs and %d positions from p) / relative score error, head_dim %d, "
              "theta %g\n\n",
              window, kHeadDim, theta);
  std::printf("| engine |");
  for (std::uint64_t p : positions) std::printf(" p = %g |", static_cast<double>(p));
  std::printf("\n|---|");
  for (std::size_t i = 0; i < sizeof(positions) / sizeof(positions[0]); ++i) std::printf("---|");
  std::printf("\n");
  for (const Engine& engine : engines) {
    std::printf("| %s |", engine.name);
    for (std::uint64_t p : positions) {
      const Measurement m = measure(engine, p, theta, window, samples);
      std::printf(" %.1e / %.1e |", m.max_angle_error, m.max_score_error);
    }
    std::printf("\n");
  }
  return 0;
}
