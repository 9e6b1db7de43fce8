// Which schedule family and which table a Halide target gets.
#include <stdexcept>

#include "schedules.h"

namespace hattn {

using Halide::Target;

std::vector<std::string> tables_for_target(const Target& t) {
  if (t.has_feature(Target::CUDA)) return {"cuda/cuda.table"};
  if (t.arch == Target::X86) {
    // AVX512-BF16 (Zen 4, Sapphire Rapids): its own lines first (the bf16 kernels' products run
    // on vdpbf16ps, whose tiles differ), then everything AVX-512.
    if (t.has_feature(Target::AVX512_Zen4) || t.has_feature(Target::AVX512_SapphireRapids)) {
      return {"x86/avx512_zen4.table", "x86/avx512.table"};
    }
    if (t.has_feature(Target::AVX512)) return {"x86/avx512.table"};
    if (t.has_feature(Target::AVX2)) return {"x86/avx2.table"};
    return {"x86/sse41.table"};
  }
  if (t.arch == Target::ARM && t.bits == 64) return {"arm/neon.table"};
  throw std::runtime_error("hattn: no schedule family for target " + t.to_string());
}

void schedule_dense(DenseStages& st, const ScheduleContext& ctx) {
  if (ctx.target.has_feature(Target::CUDA)) {
    schedule_dense_cuda(st, ctx);
  } else {
    schedule_dense_cpu(st, ctx);
  }
}

}  // namespace hattn
