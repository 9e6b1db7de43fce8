// Schedules: how each algorithm's stages run on a target family. Each function takes the stages
// an algorithm built (generators/<variant>.h) and the tunables read from the family's table; it
// never computes anything the algorithm does not define.
#pragma once

#include "Halide.h"
#include "dense.h"
#include "el.h"
#include "loki.h"
#include "sparsek.h"
#include "table.h"
#include "topk.h"

namespace hattn {

struct ScheduleContext {
  Halide::Target target;
  int head_dim = 0;  // 0: generic
  bool decode = false;
  bool with_lse = true;  // false: the lse output is a placeholder and `out` is written per task
  Tunables tunables;
};

// x86 and ARM (schedules/cpu/dense_cpu.cpp): one loop structure, tiles from each ISA's table.
void schedule_dense_cpu(DenseStages& st, const ScheduleContext& ctx);
// CUDA (schedules/cuda/dense_cuda.cpp): blocks over query blocks, shared-memory stages.
void schedule_dense_cuda(DenseStages& st, const ScheduleContext& ctx);
// topk attention and topk_ffn on x86 and ARM (schedules/cpu/topk_cpu.cpp).
void schedule_topk_cpu(TopkStages& st, const ScheduleContext& ctx);
void schedule_topk_ffn_cpu(TopkFfnStages& st, const ScheduleContext& ctx);
// Loki attention on x86 and ARM (schedules/cpu/loki_cpu.cpp).
void schedule_loki_cpu(LokiStages& st, const ScheduleContext& ctx);
// EL-attention and the linear layer on x86 and ARM (schedules/cpu/el_cpu.cpp).
void schedule_el_cpu(ElStages& st, const ScheduleContext& ctx);
void schedule_linear_cpu(LinearStages& st, const ScheduleContext& ctx);
// SPARSEK attention and the SparseK operator on x86 and ARM (schedules/cpu/sparsek_cpu.cpp).
void schedule_sparsek_cpu(SparsekStages& st, const ScheduleContext& ctx);
void schedule_sparsek_mask_cpu(SparsekMaskStages& st, const ScheduleContext& ctx);
// Picks the family's schedule for ctx.target.
void schedule_dense(DenseStages& st, const ScheduleContext& ctx);

// The table files for a target, relative to the schedules/ folder, most specific first
// ("x86/avx512_zen4.table", "x86/avx512.table"); the first with a matching line wins.
std::vector<std::string> tables_for_target(const Halide::Target& t);

}  // namespace hattn
