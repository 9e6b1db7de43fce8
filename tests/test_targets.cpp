// The CPU-feature question behind multi-target dispatch. Halide's wrapper picks a kernel build
// by asking halide_can_use_target_features(); these tests check its answers against the CPU's own
// report (cpuid through the compiler's builtins on x86, HWCAP from the kernel on aarch64), so a
// Halide runtime that could not detect features (as Halide 14 could not on ARM) fails here
// instead of silently running the baseline build.
#include <HalideRuntime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <string>

#include "dispatch.h"  // runtime/src: the kernel table and its signature check
#include "hattn/hattn.h"
#include "test_support.h"

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace {

bool halide_allows(halide_target_feature_t f) {
  constexpr int kWords = (halide_target_feature_end + 63) / 64;
  uint64_t words[kWords] = {};
  words[f / 64] |= uint64_t{1} << (f % 64);
  return halide_can_use_target_features(kWords, words) != 0;
}

struct FeatureCheck {
  const char* name;
  halide_target_feature_t halide;
  bool cpu;  // what the CPU itself reports
};

std::vector<FeatureCheck> features_of_this_cpu() {
#if defined(__aarch64__)
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  return {{"arm_dot_prod (asimddp)", halide_target_feature_arm_dot_prod, (hw & HWCAP_ASIMDDP) != 0},
          {"arm_fp16 (asimdhp)", halide_target_feature_arm_fp16, (hw & HWCAP_ASIMDHP) != 0},
          {"sve", halide_target_feature_sve, (hw & HWCAP_SVE) != 0},
          {"sve2", halide_target_feature_sve2, (hw2 & HWCAP2_SVE2) != 0}};
#else
  __builtin_cpu_init();
  return {{"sse41", halide_target_feature_sse41, __builtin_cpu_supports("sse4.1") != 0},
          {"avx2", halide_target_feature_avx2, __builtin_cpu_supports("avx2") != 0},
          {"fma", halide_target_feature_fma, __builtin_cpu_supports("fma") != 0},
          {"avx512_skylake", halide_target_feature_avx512_skylake,
           __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512cd")}};
#endif
}

TEST(CpuFeatures, HalideAgreesWithTheCpu) {
  if (hattn_test::isa_restriction() != "native") {
    GTEST_SKIP() << "HATTN_TEST_ISA=" << hattn_test::isa_restriction()
                 << " deliberately overrides Halide's answers";
  }
  for (const FeatureCheck& f : features_of_this_cpu()) {
    const bool halide = halide_allows(f.halide);
    std::cout << "[ FEATURE  ] " << f.name << ": cpu " << f.cpu << ", halide " << halide
              << std::endl;
    EXPECT_EQ(halide, f.cpu) << f.name;
  }
}

// Every CPU kernel has a build this CPU can run, and it is the first one (best first) that the
// CPU's features allow.
TEST(CpuFeatures, EveryKernelHasARunnableBuild) {
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.family == "cuda") continue;
    const std::string build = hattn::selected_build(k);
    EXPECT_FALSE(build.empty()) << k.name << " (" << k.target << ")";
    EXPECT_EQ(k.family, hattn_test::cpu_family()) << k.name;
  }
}

// The builds above each family's base that the CMake functions add (cmake/HattnKernels.cmake):
// f16 kernels on aarch64 run their arm_fp16 build exactly where the CPU has FP16 (on qemu's
// "max" CPU it has, on the Cortex-A53 of test_*.cpu_cortex_a53 not); bf16 pair-product kernels
// on x86 run their avx512_zen4 build where the CPU has AVX512-BF16.
TEST(CpuFeatures, FeatureBuildsRunWhereTheCpuHasTheFeature) {
  if (hattn_test::isa_restriction() != "native") {
    GTEST_SKIP() << "HATTN_TEST_ISA=" << hattn_test::isa_restriction()
                 << " deliberately overrides Halide's answers";
  }
#if defined(__aarch64__)
  const char* feature = "arm_fp16";
  const bool cpu_has = (getauxval(AT_HWCAP) & HWCAP_ASIMDHP) != 0;
#else
  const char* feature = "avx512_zen4";
  const bool cpu_has = __builtin_cpu_supports("avx512bf16") != 0;
#endif
  int with_build = 0;
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
#if defined(__aarch64__)
    if (k.family == "arm" && k.dtype.rfind("f16", 0) == 0) {
      EXPECT_NE(k.target.find(feature), std::string::npos) << k.name << ": " << k.target;
    }
#endif
    if (k.family == "cuda" || k.target.find(feature) == std::string::npos) {
      continue;
    }
    ++with_build;
    const std::string build = hattn::selected_build(k);
    EXPECT_EQ(build.find(feature) != std::string::npos, cpu_has)
        << k.name << " runs " << build << " (cpu has " << feature << ": " << cpu_has << ")";
  }
  std::cout << "[ FEATURE  ] " << with_build << " kernels with a " << feature
            << " build; cpu has it: " << cpu_has << std::endl;
  EXPECT_GT(with_build, 0) << "no kernel has a " << feature << " build";
}

// hattn::limit_isa: a cap moves every kernel to its best build at or below it, refusals (an
// unknown level, the other family's) leave the cap as it was, and "native" lifts it.
TEST(CpuFeatures, LimitIsaCapsEveryKernel) {
  const std::string before = hattn::isa_limit();
  EXPECT_EQ(before, hattn_test::isa_restriction());
#if defined(__aarch64__)
  const std::string level = "neon", foreign = "avx2", refused = "arm_fp16";
#else
  const std::string level = "sse41", foreign = "neon", refused = "avx";
#endif
  ASSERT_TRUE(hattn::limit_isa(level).ok());
  EXPECT_EQ(hattn::isa_limit(), level);
  int capped = 0;
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.family == "cuda") {
      continue;
    }
    const std::string build = hattn::selected_build(k);
    EXPECT_FALSE(build.empty()) << k.name;
    EXPECT_EQ(build.find(refused), std::string::npos) << k.name << " runs " << build;
    capped += k.target.find(refused) != std::string::npos ? 1 : 0;
  }
  EXPECT_GT(capped, 0) << "no kernel has a build above " << level;
  for (const std::string& bad : {std::string("avx3"), foreign, std::string()}) {
    const hattn::Status st = hattn::limit_isa(bad);
    EXPECT_EQ(st.code, hattn::StatusCode::invalid_argument) << bad;
    EXPECT_NE(st.message.find("'" + bad + "'"), std::string::npos) << st.message;
    EXPECT_EQ(hattn::isa_limit(), level) << "a refused level changed the cap";
  }
  ASSERT_TRUE(hattn::limit_isa("native").ok());
  EXPECT_EQ(hattn::isa_limit(), "native");
  ASSERT_TRUE(hattn::limit_isa(before).ok());
}

}  // namespace

// Every generated kernel's arguments carry the names hattn/kernel_registry.h gives its variant,
// in order (the types are checked when the registration source compiles).
TEST(KernelSignatures, EveryKernelMatchesItsVariant) {
  int checked = 0;
  for (const hattn::KernelEntry& e : hattn::kernel_table()) {
    EXPECT_EQ(e.signature_problem, "") << e.info.name;
    ++checked;
  }
  EXPECT_GT(checked, 0);
  std::cout << "[  KERNELS ] " << checked << " signatures checked\n";
}

// The name check itself: two buffers swapped keep the C type, not the names.
TEST(KernelSignatures, SwappedArgumentsAreNamed) {
  halide_filter_argument_t args[6] = {};
  const char* names[6] = {"__user_context", "z", "len", "budget", "mask$7", "tau__5"};
  for (int i = 0; i < 6; ++i) args[i].name = names[i];
  halide_filter_metadata_t meta = {};
  meta.num_arguments = 6;
  meta.arguments = args;
  EXPECT_EQ(hattn::signature_mismatch(&meta, HATTN_ARGS_sparsek_mask), "");
  std::swap(args[1].name, args[2].name);
  const std::string why = hattn::signature_mismatch(&meta, HATTN_ARGS_sparsek_mask);
  EXPECT_NE(why.find("(len,z,budget,mask,tau)"), std::string::npos) << why;
  EXPECT_NE(why.find("(z,len,budget,mask,tau)"), std::string::npos) << why;
  EXPECT_NE(hattn::signature_mismatch(nullptr, HATTN_ARGS_dense), "");
}
