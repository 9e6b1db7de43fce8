// The hattn command line:
//   hattn list
//   hattn --version
//   hattn run dense    --q q.npy --k k.npy --v v.npy --out o.npy [--causal] [--scale S] ...
//   hattn run topk     --q q.npy --k k.npy --v v.npy --topk K --out o.npy [--causal] ...
//   hattn run topk-ffn --x x.npy --w1 w1.npy --w2 w2.npy --topk K --out y.npy
//   hattn run loki     --q q.npy --k krot.npy --v v.npy --basis P.npy --rank R --topk K --out o.npy
//   hattn run el       --x x.npy --memory hs.npy --weights DIR --heads H [--beam B] --out y.npy
//   hattn run sparsek  --q q.npy --k k.npy --v v.npy --x x.npy --w-score w.npy --budget K
//                      --window W [--slope S] [--gate value|logit] --out o.npy
//   hattn run sparsek-mask --z z.npy --budget K [--lengths n.npy] --out p.npy [--tau tau.npy]
//   hattn run paged    --q q.npy --k-pages kp.npy --v-pages vp.npy --page-table pt.npy
//                      --lengths len.npy --out o.npy [--causal] [--lse lse.npy] [--dtype bf16]
//   hattn run ragged   --q q.npy --k k.npy --v v.npy --q-offsets qo.npy --k-offsets ko.npy
//                      --out o.npy [--causal] [--lse lse.npy] [--dtype bf16]
//   hattn fidelity topk [--lq N --lk N --head-dim D --causal --seed S]
//   hattn calibrate loki --keys keys.npy --out basis.npy [--variances var.npy] [--variance 0.9]
//   hattn rotate --keys k.npy --basis basis.npy --out krot.npy [--layer L]
// Every failure is one line on stderr starting with "hattn: error: " and a non-zero exit status
// (2 for usage errors, 1 for data and runtime errors). Each command family lives in cli_*.cpp.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cli_common.h"
#include "hattn/hattn.h"

namespace {

const std::vector<std::string> kCommands = {"list", "run", "fidelity", "calibrate", "rotate"};
const std::vector<std::string> kVariants = {"dense",   "topk",         "topk-ffn", "loki",  "el",
                                            "sparsek", "sparsek-mask", "paged",    "ragged"};

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// One row per kernel; the last column is the build this machine runs (of the kernel's
// multi-target builds) and how many builds the library holds.
int list_kernels() {
  std::printf("%-42s %-8s %-8s %-7s %-8s %-4s %-6s %s\n", "kernel", "variant", "phase", "causal",
              "head_dim", "lse", "dtype", "runs here (builds)");
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    std::string d = k.head_dim ? std::to_string(k.head_dim) : "any";
    std::string runs = hattn::selected_build(k);
    if (runs.empty()) runs = "none usable on this CPU";
    const long builds = 1 + std::count(k.target.begin(), k.target.end(), ',');
    std::printf("%-42s %-8s %-8s %-7s %-8s %-4s %-6s %s (%ld)\n", k.name.c_str(), k.variant.c_str(),
                k.phase.c_str(), k.causal ? "yes" : "no", d.c_str(), k.lse ? "yes" : "no",
                k.dtype.c_str(), runs.c_str(), builds);
  }
  return 0;
}

bool known(const std::vector<std::string>& names, const std::string& s) {
  return std::find(names.begin(), names.end(), s) != names.end();
}

// CLI11 would say "argument was not expected"; say what the user got wrong instead.
int refuse_unknown_words(int argc, char** argv) {
  if (argc > 1 && argv[1][0] != '-' && !known(kCommands, argv[1])) {
    std::fprintf(stderr, "hattn: error: unknown command '%s' (commands: %s)\n", argv[1],
                 joined(kCommands).c_str());
    return 2;
  }
  if (argc > 2 && std::string(argv[1]) == "run" && argv[2][0] != '-' &&
      !known(kVariants, argv[2])) {
    std::fprintf(stderr, "hattn: error: unknown variant '%s' (available: %s)\n", argv[2],
                 joined(kVariants).c_str());
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hattn: ahead-of-time compiled attention kernels"};
  app.set_version_flag("--version", std::string("hattn ") + hattn::version() + " (" +
                                        std::to_string(hattn::list_kernels().size()) +
                                        " kernels; Halide " HATTN_HALIDE_VERSION ")");
  app.require_subcommand(1);
  app.fallthrough();  // --isa also after the command
  std::string isa = "native";
  app.add_option("--isa", isa,
                 "the best CPU build kernels may run: native (default), avx512, avx2, sse41 "
                 "(x86) or neon (aarch64); `list` shows which build each kernel then runs");
  CLI::App* list = app.add_subcommand("list", "print the compiled kernels");
  CLI::App* run = app.add_subcommand("run", "run a kernel on .npy inputs");
  run->require_subcommand(1);
  const std::vector<hattn_cli::Action> actions = {
      hattn_cli::add_run_attention(run), hattn_cli::add_run_ffn(run),
      hattn_cli::add_run_el(run),        hattn_cli::add_fidelity(&app),
      hattn_cli::add_calibrate(&app),    hattn_cli::add_rotate(&app),
      hattn_cli::add_run_sparsek(run),   hattn_cli::add_run_batch(run)};
  if (int rc = refuse_unknown_words(argc, argv)) return rc;
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "hattn: error: %s (try --help)\n", what.c_str());
    return 2;
  }
  if (const hattn::Status st = hattn::limit_isa(isa); !st.ok()) {
    std::fprintf(stderr, "hattn: error: --isa: %s\n", st.message.c_str());
    return 2;
  }
  try {
    if (*list) return list_kernels();
    for (const hattn_cli::Action& act : actions) {
      const int rc = act();
      if (rc >= 0) return rc;
    }
    std::fprintf(stderr, "hattn: error: nothing to run (try --help)\n");
    return 2;
  } catch (const hattn_cli::Failure& f) {
    return f.status;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hattn: error: %s\n", e.what());
    return 1;
  }
}
