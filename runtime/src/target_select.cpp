// Which build of a multi-target kernel runs on this machine. Halide's multi-target wrapper asks
// halide_can_use_target_features() about each build, best first, and runs the first one the
// answer allows; asking the same question here reports that choice without running a kernel
// (and honours an override installed with halide_set_custom_can_use_target_features).
#include <HalideRuntime.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <utility>

#include "hattn/hattn.h"

namespace hattn {

namespace {

constexpr int kFeatureWords = (halide_target_feature_end + 63) / 64;

// The instruction-set features hattn's target lists use. Other features (user_context, cuda
// and its capability) do not depend on the CPU and are left out of the question.
const std::pair<const char*, halide_target_feature_t> kIsaFeatures[] = {
    {"sse41", halide_target_feature_sse41},
    {"avx", halide_target_feature_avx},
    {"avx2", halide_target_feature_avx2},
    {"fma", halide_target_feature_fma},
    {"f16c", halide_target_feature_f16c},
    {"avx512", halide_target_feature_avx512},
    {"avx512_skylake", halide_target_feature_avx512_skylake},
    {"avx512_cannonlake", halide_target_feature_avx512_cannonlake},
    {"avx512_sapphirerapids", halide_target_feature_avx512_sapphirerapids},
    {"avx512_zen4", halide_target_feature_avx512_zen4},
    {"arm_dot_prod", halide_target_feature_arm_dot_prod},
    {"arm_fp16", halide_target_feature_arm_fp16},
    {"sve2", halide_target_feature_sve2},
};

bool usable(const std::string& target) {
  uint64_t words[kFeatureWords] = {};
  std::istringstream parts(target);
  std::string feature;
  while (std::getline(parts, feature, '-')) {
    for (const auto& [name, id] : kIsaFeatures) {
      if (feature == name) words[id / 64] |= uint64_t{1} << (id % 64);
    }
  }
  return halide_can_use_target_features(kFeatureWords, words) != 0;
}

}  // namespace

std::string selected_build(const KernelInfo& kernel) {
  if (kernel.family == "cuda") return kernel.target;  // one build; the device decides the rest
  std::istringstream builds(kernel.target);
  std::string build;
  while (std::getline(builds, build, ',')) {
    if (usable(build)) return build;
  }
  return "";
}

}  // namespace hattn
