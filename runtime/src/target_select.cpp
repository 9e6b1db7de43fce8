// Which build of a multi-target kernel runs on this machine. Halide's multi-target wrapper asks
// halide_can_use_target_features() about each build, best first, and runs the first one the
// answer allows; asking the same question here reports that choice without running a kernel
// (and honours an override installed with halide_set_custom_can_use_target_features).
#include <HalideRuntime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dispatch.h"
#include "hattn/hattn.h"
#include "validate.h"

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

struct Build {
  std::string target;
  std::array<uint64_t, kFeatureWords> words{};
};

// The builds of a comma-separated target list with the ISA features each asks for.
std::vector<Build> parse_builds(const std::string& targets) {
  std::vector<Build> out;
  std::istringstream builds(targets);
  std::string build;
  while (std::getline(builds, build, ',')) {
    Build b{build, {}};
    std::istringstream parts(build);
    std::string feature;
    while (std::getline(parts, feature, '-')) {
      for (const auto& [name, id] : kIsaFeatures) {
        if (feature == name) b.words[id / 64] |= uint64_t{1} << (id % 64);
      }
    }
    out.push_back(std::move(b));
  }
  return out;
}

// Parsed once per target list: dispatch asks this of every candidate kernel on every call, and
// parsing the strings each time cost tens of microseconds per call (a decode on a tiny cache).
const std::vector<Build>& builds_of(const std::string& targets) {
  static std::mutex mutex;
  static std::map<std::string, std::vector<Build>> parsed;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = parsed.find(targets);
  if (it == parsed.end()) it = parsed.emplace(targets, parse_builds(targets)).first;
  return it->second;  // std::map never moves its values
}

// The first build of a CPU kernel that this CPU runs, or null. The question itself is asked every
// time: a custom can_use_target_features hook may change.
const Build* runnable_build(const KernelInfo& kernel) {
  for (const Build& b : builds_of(kernel.target)) {
    if (halide_can_use_target_features(kFeatureWords, b.words.data()) != 0) return &b;
  }
  return nullptr;
}

// limit_isa(): the features a level refuses (any build asking for one is passed over).
struct IsaLevel {
  const char* name;
  const char* family;
  std::vector<halide_target_feature_t> refused;
};

const std::vector<IsaLevel>& isa_levels() {
  static const std::vector<halide_target_feature_t> avx512_bf16 = {
      halide_target_feature_avx512_sapphirerapids, halide_target_feature_avx512_zen4,
      halide_target_feature_avx512_zen5, halide_target_feature_avx10_1};
  static const std::vector<IsaLevel> levels = [] {
    std::vector<halide_target_feature_t> avx512 = avx512_bf16;
    for (auto f : {halide_target_feature_avx512, halide_target_feature_avx512_knl,
                   halide_target_feature_avx512_skylake, halide_target_feature_avx512_cannonlake}) {
      avx512.push_back(f);
    }
    std::vector<halide_target_feature_t> avx = avx512;
    for (auto f : {halide_target_feature_avx, halide_target_feature_avx2, halide_target_feature_fma,
                   halide_target_feature_f16c}) {
      avx.push_back(f);
    }
    return std::vector<IsaLevel>{{"avx512", "x86", avx512_bf16},
                                 {"avx2", "x86", avx512},
                                 {"sse41", "x86", avx},
                                 {"neon", "arm", {halide_target_feature_arm_fp16}}};
  }();
  return levels;
}

// The cap in force: null for "native". Read by Halide's feature hook on every kernel call.
std::atomic<const IsaLevel*> g_isa_limit{nullptr};
std::atomic<int64_t> g_isa_refusals{0};

int can_use_under_limit(int count, const uint64_t* features) {
  if (const IsaLevel* level = g_isa_limit.load()) {
    for (halide_target_feature_t f : level->refused) {
      if ((f >> 6) < count && ((features[f >> 6] >> (f & 63)) & 1) != 0) {
        ++g_isa_refusals;
        return 0;
      }
    }
  }
  return halide_default_can_use_target_features(count, features);
}

}  // namespace

Status limit_isa(const std::string& level) {
#if defined(__aarch64__)
  const char* family = "arm";
#else
  const char* family = "x86";
#endif
  if (level == "native") {
    g_isa_limit.store(nullptr);
    return Status::success();
  }
  std::string known = "native";
  for (const IsaLevel& l : isa_levels()) {
    if (std::string(l.family) != family) {
      continue;
    }
    known += std::string(", ") + l.name;
    if (level != l.name) {
      continue;
    }
    halide_set_custom_can_use_target_features(can_use_under_limit);
    g_isa_limit.store(&l);
    return Status::success();
  }
  return invalid("limit_isa: unknown ISA level '" + level + "' for this " + family +
                 " build (one of: " + known + ")");
}

std::string isa_limit() {
  const IsaLevel* l = g_isa_limit.load();
  return l ? l->name : "native";
}

int64_t isa_limit_refusals() { return g_isa_refusals.load(); }

bool runs_on_this_cpu(const KernelInfo& kernel) { return runnable_build(kernel) != nullptr; }

std::string selected_build(const KernelInfo& kernel) {
  if (kernel.family == "cuda") return kernel.target;  // one build; the device decides the rest
  const Build* b = runnable_build(kernel);
  return b ? b->target : "";
}

}  // namespace hattn
