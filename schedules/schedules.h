// Schedules: how each algorithm's stages run on a target family. Each function takes the stages
// an algorithm built (generators/<variant>.h) and the tunables read from the family's table; it
// never computes anything the algorithm does not define.
#pragma once

#include "Halide.h"
#include "dense.h"
#include "table.h"

namespace hattn {

struct ScheduleContext {
  Halide::Target target;
  int head_dim = 0;  // 0: generic
  bool decode = false;
  bool with_lse = true;  // false: the lse output is a placeholder and `out` is written per task
  Tunables tunables;
};

void schedule_dense_x86(DenseStages& st, const ScheduleContext& ctx);

// Table file for a target, relative to the schedules/ folder: "x86/avx512.table" etc.
std::string table_for_target(const Halide::Target& t);

}  // namespace hattn
