// The CLI end to end, run as a user runs it: list, run dense (checked against the double
// reference), the batch commands run paged and run ragged (against the reference on each
// sequence gathered by plain indexing), and every error path (one line on stderr, non-zero
// status, never a signal).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "npy.h"
#include "test_support.h"

extern char** environ;

namespace {

struct Result {
  int status = -1;
  bool signaled = false;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A directory of this test process's own: ctest runs the tests of this file in parallel
// processes, which must not share input or output files.
std::string dir() {
  static const std::string d = [] {
    std::string templ = testing::TempDir() + "hattn_cli_XXXXXX";
    const char* made = mkdtemp(templ.data());
    return std::string(made ? made : testing::TempDir().c_str()) + "/";
  }();
  return d;
}

Result run_cli(const std::vector<std::string>& args) {
  const std::string out_path = dir() + "hattn_cli_stdout.txt",
                    err_path = dir() + "hattn_cli_stderr.txt";
  // A cross-compiled CLI runs under the same emulator as the tests (HATTN_CLI_LAUNCHER, e.g.
  // "qemu-aarch64|-L|/usr/aarch64-linux-gnu"; empty natively).
  std::vector<std::string> full;
  std::istringstream launcher(HATTN_CLI_LAUNCHER);
  for (std::string part; std::getline(launcher, part, '|');) {
    if (!part.empty()) full.push_back(part);
  }
  full.push_back(HATTN_CLI_PATH);
  full.insert(full.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : full) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  Result r;
  if (posix_spawnp(&pid, full[0].c_str(), &fa, nullptr, argv.data(), environ) != 0) return r;
  posix_spawn_file_actions_destroy(&fa);
  int ws = 0;
  waitpid(pid, &ws, 0);
  r.signaled = WIFSIGNALED(ws);
  r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

void save(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& x) {
  std::string error;
  ASSERT_TRUE(hattn::npy::write_f32(dir() + name, shape, x.data(), &error)) << error;
}

std::vector<float> random_vec(hattn_test::TestRng& rng, size_t n) {
  std::vector<float> x(n);
  for (float& v : x) v = rng.normal();
  return x;
}

// The call failed cleanly: non-zero status, no signal, exactly one stderr line starting
// "hattn: error:" that mentions `phrase`.
void expect_one_line_error(const Result& r, const std::string& phrase) {
  EXPECT_FALSE(r.signaled);
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(r.err.rfind("hattn: error: ", 0), 0u) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  EXPECT_NE(r.err.find(phrase), std::string::npos) << "missing '" << phrase << "' in: " << r.err;
}

class Cli : public testing::Test {
 protected:
  void SetUp() override {
    hattn_test::TestRng rng("cli");
    trace_ = rng.description();
    q_ = random_vec(rng, 1 * 4 * 7 * 64);
    k_ = random_vec(rng, 1 * 2 * 9 * 64);
    v_ = random_vec(rng, 1 * 2 * 9 * 64);
    save("q.npy", {1, 4, 7, 64}, q_);
    save("k.npy", {1, 2, 9, 64}, k_);
    save("v.npy", {1, 2, 9, 64}, v_);
  }

  void check_output(bool causal) {
    SCOPED_TRACE(trace_);
    hattn_test::AttnShape shape{1, 4, 2, 7, 9, 64};
    const hattn_test::AttnStrides strides = hattn_test::dense_strides(shape);
    std::vector<double> ref, lse;
    hattn_test::reference_attention(q_.data(), k_.data(), v_.data(), shape, strides, causal,
                                    1.0 / 8.0, &ref, &lse);
    hattn::npy::Array o, l;
    std::string error;
    ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o, &error)) << error;
    ASSERT_TRUE(hattn::npy::read_f32(dir() + "lse.npy", &l, &error)) << error;
    EXPECT_EQ(o.shape, (std::vector<int64_t>{1, 4, 7, 64}));
    EXPECT_EQ(l.shape, (std::vector<int64_t>{1, 4, 7}));
    ASSERT_EQ(o.data.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(o.data[i], ref[i], 1e-5 + 1e-4 * std::fabs(ref[i])) << "index " << i;
    }
    for (size_t i = 0; i < lse.size(); ++i) {
      ASSERT_NEAR(l.data[i], lse[i], 1e-4 + 1e-5 * std::fabs(lse[i])) << "lse index " << i;
    }
  }

  std::vector<std::string> run_args(const std::string& q = "q.npy") {
    return {"run",           "dense", "--q",           dir() + q, "--k",
            dir() + "k.npy", "--v",   dir() + "v.npy", "--out",   dir() + "o.npy"};
  }

  // x rounded to the 16-bit dtype t, as `--dtype` does in memory.
  static std::vector<float> rounded(hattn::DType t, const std::vector<float>& x) {
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = hattn::from_16bit(t, hattn::to_16bit(t, x[i]));
    return y;
  }

  std::string trace_;
  std::vector<float> q_, k_, v_;
};

TEST_F(Cli, ListPrintsKernels) {
  Result r = run_cli({"list"});
  EXPECT_EQ(r.status, 0) << r.err;
  const std::string f = "_f32_" + hattn_test::cpu_family();
  EXPECT_NE(r.out.find("dense_prefill_noncausal_d64" + f), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dense_decode_causal_lse_dany" + f), std::string::npos) << r.out;
}

// --isa caps the build each kernel runs (list shows it), a run under the cap still matches the
// reference, and an unknown level is one line and status 2.
TEST_F(Cli, IsaCapsTheBuilds) {
  const bool arm = hattn_test::cpu_family() == "arm";
  const std::string level = arm ? "neon" : "sse41";
  const std::string refused = arm ? "arm_fp16" : "avx";
  Result r = run_cli({"list", "--isa", level});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find(arm ? "arm-64-linux" : "x86-64-linux-sse41"), std::string::npos) << r.out;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("_cuda ") != std::string::npos) {
      continue;
    }
    EXPECT_EQ(line.find(refused), std::string::npos) << "under --isa " << level << ": " << line;
  }
  std::vector<std::string> args = run_args();
  args.insert(args.end(), {"--isa", level, "--lse", dir() + "lse.npy"});
  r = run_cli(args);
  ASSERT_EQ(r.status, 0) << r.err;
  check_output(false);
  r = run_cli({"--isa", "avx3", "list"});
  EXPECT_EQ(r.status, 2);
  expect_one_line_error(r, "unknown ISA level 'avx3'");
}

// The version is the CMake project's (HATTN_PROJECT_VERSION, from CMakeLists.txt), the same that
// the installed package reports, and the library and CLI agree on it.
TEST_F(Cli, VersionIsThePackageVersion) {
  EXPECT_STREQ(hattn::version(), HATTN_PROJECT_VERSION);
  Result r = run_cli({"--version"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind(std::string("hattn ") + HATTN_PROJECT_VERSION + " (", 0), 0u) << r.out;
  EXPECT_NE(r.out.find(std::to_string(hattn::list_kernels().size()) + " kernels"),
            std::string::npos)
      << r.out;
}

TEST_F(Cli, RunDenseMatchesReference) {
  for (bool causal : {false, true}) {
    std::vector<std::string> args = run_args();
    args.insert(args.end(), {"--lse", dir() + "lse.npy", "--repeat", "3"});
    if (causal) args.push_back("--causal");
    Result r = run_cli(args);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("kernel: dense_"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("GFLOP/s"), std::string::npos) << r.out;
    check_output(causal);
  }
}

// run dense --dtype bf16|f16: the inputs rounded to the dtype in memory, a 16-bit kernel, out
// widened back to float32: within the stated 16-bit tolerance (test_support.h) of the reference
// on the rounded inputs, and the output names the 16-bit kernel.
TEST_F(Cli, RunDense16Bit) {
  SCOPED_TRACE(trace_);
  for (const char* dtype : {"bf16", "f16"}) {
    const hattn::DType t = std::string(dtype) == "bf16" ? hattn::DType::bf16 : hattn::DType::f16;
    std::vector<std::string> args = run_args();
    args.insert(args.end(), {"--dtype", dtype, "--causal"});
    Result r = run_cli(args);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find(std::string("_") + dtype + "_"), std::string::npos) << r.out;
    const std::vector<float> q = rounded(t, q_), k = rounded(t, k_), v = rounded(t, v_);
    hattn_test::AttnShape shape{1, 4, 2, 7, 9, 64};
    const hattn_test::AttnStrides strides = hattn_test::dense_strides(shape);
    std::vector<float> v_abs(v.size());
    for (size_t i = 0; i < v.size(); ++i) v_abs[i] = std::fabs(v[i]);
    std::vector<double> ref, ref_abs;
    hattn_test::reference_attention(q.data(), k.data(), v.data(), shape, strides, true, 1.0 / 8.0,
                                    &ref, nullptr);
    hattn_test::reference_attention(q.data(), k.data(), v_abs.data(), shape, strides, true,
                                    1.0 / 8.0, &ref_abs, nullptr);
    hattn::npy::Array o;
    std::string error;
    ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o, &error)) << error;
    ASSERT_EQ(o.data.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(o.data[i], ref[i], hattn_test::sixteen_bit_tolerance(t, ref[i], ref_abs[i]))
          << dtype << " index " << i;
    }
    // f16 output is a float16 .npy (NumPy's own dtype); bf16 has none: float32.
    EXPECT_EQ(o.float16, t == hattn::DType::f16) << dtype;
  }
  // float16 .npy inputs are read as they are: the same output as from the float32 files that
  // round to them.
  auto half_file = [&](const std::string& name, const std::vector<float>& x,
                       const std::vector<int64_t>& shape) {
    std::vector<uint16_t> bits(x.size());
    for (size_t i = 0; i < x.size(); ++i) bits[i] = hattn::to_16bit(hattn::DType::f16, x[i]);
    std::string error;
    ASSERT_TRUE(hattn::npy::write_f16(dir() + name, shape, bits.data(), &error)) << error;
  };
  std::vector<std::string> args = run_args();
  args.insert(args.end(), {"--dtype", "f16", "--causal"});
  ASSERT_EQ(run_cli(args).status, 0);
  hattn::npy::Array from_f32, from_f16;
  std::string error;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &from_f32, &error)) << error;
  half_file("q16.npy", q_, {1, 4, 7, 64});
  half_file("k16.npy", k_, {1, 2, 9, 64});
  half_file("v16.npy", v_, {1, 2, 9, 64});
  args[3] = dir() + "q16.npy";
  args[5] = dir() + "k16.npy";
  args[7] = dir() + "v16.npy";
  Result r = run_cli(args);
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &from_f16, &error)) << error;
  EXPECT_EQ(from_f16.data, from_f32.data);
}

// run topk: k >= Lk is exact dense attention (and the verbose output says k was clamped); a
// small k matches the brute-force top-k reference.
TEST_F(Cli, RunTopkMatchesReference) {
  SCOPED_TRACE(trace_);
  std::vector<std::string> args = run_args();
  args[1] = "topk";
  std::vector<std::string> clamped = args;
  clamped.insert(clamped.end(), {"--topk", "50", "-v"});
  Result r = run_cli(clamped);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("kernel: topk_"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("clamped"), std::string::npos) << r.out;
  hattn_test::AttnShape shape{1, 4, 2, 7, 9, 64};
  const hattn_test::AttnStrides strides = hattn_test::dense_strides(shape);
  for (int64_t k : {int64_t{50}, int64_t{3}}) {
    if (k != 50) {
      std::vector<std::string> small = args;
      small.insert(small.end(), {"--topk", std::to_string(k), "--causal"});
      r = run_cli(small);
      ASSERT_EQ(r.status, 0) << r.err;
    }
    std::vector<double> ref, gap;
    hattn_test::reference_topk_attention(q_.data(), k_.data(), v_.data(), shape, strides, k != 50,
                                         1.0 / 8.0, k, &ref, &gap);
    hattn::npy::Array o;
    std::string error;
    ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o, &error)) << error;
    ASSERT_EQ(o.data.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      if (gap[i / 64] < 1e-5) continue;  // a near-tie may legitimately select differently
      ASSERT_NEAR(o.data[i], ref[i], 1e-5 + 1e-4 * std::fabs(ref[i]))
          << "k " << k << " index " << i;
    }
  }
  std::vector<std::string> bad_k = args;
  bad_k.insert(bad_k.end(), {"--topk", "0"});
  expect_one_line_error(run_cli(bad_k), "must be >= 1");
  expect_one_line_error(run_cli(args), "--topk");
}

// run dense --dtype bf16kv|f16kv (Lq = 7: decode): q and out stay float32, k and v are rounded to
// the cache's dtype; out within the fp32 tolerance of the float64 reference on those values.
TEST_F(Cli, RunDenseFp32QueryOver16BitCache) {
  SCOPED_TRACE(trace_);
  for (const char* dtype : {"bf16kv", "f16kv"}) {
    const hattn::DType t = std::string(dtype) == "bf16kv" ? hattn::DType::bf16 : hattn::DType::f16;
    std::vector<std::string> args = run_args();
    args.insert(args.end(), {"--dtype", dtype, "--causal"});
    Result r = run_cli(args);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find(std::string("_") + dtype + "_"), std::string::npos) << r.out;
    const std::vector<float> k = rounded(t, k_), v = rounded(t, v_);
    hattn_test::AttnShape shape{1, 4, 2, 7, 9, 64};
    const hattn_test::AttnStrides strides = hattn_test::dense_strides(shape);
    std::vector<double> ref;
    hattn_test::reference_attention(q_.data(), k.data(), v.data(), shape, strides, true, 1.0 / 8.0,
                                    &ref, nullptr);
    hattn::npy::Array o;
    std::string error;
    ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o, &error)) << error;
    EXPECT_FALSE(o.float16) << dtype << ": out is float32";
    ASSERT_EQ(o.data.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(o.data[i], ref[i], 1e-5 + 1e-4 * std::fabs(ref[i])) << dtype << " index " << i;
    }
  }
  std::vector<std::string> topk = run_args();
  topk[1] = "topk";
  topk.insert(topk.end(), {"--topk", "3", "--dtype", "bf16kv"});
  expect_one_line_error(run_cli(topk), "--dtype");
}

// run topk --dtype bf16|f16 (Lq = 7: decode over a 16-bit cache): a 16-bit kernel, within half
// an ulp of the output's dtype of the float64 top-k on the rounded inputs.
TEST_F(Cli, RunTopk16Bit) {
  SCOPED_TRACE(trace_);
  for (const char* dtype : {"bf16", "f16"}) {
    const hattn::DType t = std::string(dtype) == "bf16" ? hattn::DType::bf16 : hattn::DType::f16;
    std::vector<std::string> args = run_args();
    args[1] = "topk";
    args.insert(args.end(), {"--topk", "3", "--causal", "--dtype", dtype});
    Result r = run_cli(args);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find(std::string("kernel: topk_decode_causal_d64_") + dtype + "_"),
              std::string::npos)
        << r.out;
    const std::vector<float> q = rounded(t, q_), k = rounded(t, k_), v = rounded(t, v_);
    hattn_test::AttnShape shape{1, 4, 2, 7, 9, 64};
    const hattn_test::AttnStrides strides = hattn_test::dense_strides(shape);
    std::vector<double> ref, gap;
    hattn_test::reference_topk_attention(q.data(), k.data(), v.data(), shape, strides, true,
                                         1.0 / 8.0, 3, &ref, &gap);
    hattn::npy::Array o;
    std::string error;
    ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o, &error)) << error;
    ASSERT_EQ(o.data.size(), ref.size());
    EXPECT_EQ(o.float16, t == hattn::DType::f16) << dtype;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (gap[i / 64] < hattn_test::kMinGap) continue;  // a near-tie may select differently
      ASSERT_NEAR(o.data[i], ref[i], hattn_test::sixteen_bit_output_tolerance(t, ref[i]))
          << dtype << " index " << i;
    }
  }
}

// run topk-ffn reads W2 as [D, d_ff] (a framework's Linear layout) and transposes it itself.
TEST_F(Cli, RunTopkFfnMatchesReference) {
  hattn_test::TestRng rng("cli-ffn");
  const int64_t tokens = 6, dim = 16, d_ff = 40, k = 5;
  std::vector<float> x = random_vec(rng, tokens * dim), w1 = random_vec(rng, d_ff * dim),
                     w2 = random_vec(rng, dim * d_ff), w2t(w2.size());
  for (int64_t r = 0; r < dim; ++r) {
    for (int64_t c = 0; c < d_ff; ++c) w2t[c * dim + r] = w2[r * d_ff + c];
  }
  save("x.npy", {tokens, dim}, x);
  save("w1.npy", {d_ff, dim}, w1);
  save("w2.npy", {dim, d_ff}, w2);
  save("w2_wrong.npy", {d_ff, dim}, w2t);
  const std::vector<std::string> args = {"run",    "topk-ffn",        "--x",   dir() + "x.npy",
                                         "--w1",   dir() + "w1.npy",  "--w2",  dir() + "w2.npy",
                                         "--topk", std::to_string(k), "--out", dir() + "y.npy"};
  Result r = run_cli(args);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("kernel: topk_ffn_"), std::string::npos) << r.out;
  std::vector<double> ref, gap;
  hattn_test::reference_topk_ffn(x.data(), w1.data(), w2t.data(), tokens, dim, d_ff, k, &ref, &gap);
  hattn::npy::Array y;
  std::string error;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "y.npy", &y, &error)) << error;
  EXPECT_EQ(y.shape, (std::vector<int64_t>{tokens, dim}));
  ASSERT_EQ(y.data.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    if (gap[i / dim] < 1e-5) continue;
    ASSERT_NEAR(y.data[i], ref[i], 1e-4 + 1e-4 * std::fabs(ref[i]))
        << rng.description() << " " << i;
  }
  // --dtype bf16|f16: x and the weights rounded to it, y within half an ulp of its dtype of the
  // float64 FFN on the rounded values (f16 written as float16 .npy).
  for (const char* dtype : {"bf16", "f16"}) {
    const hattn::DType t = std::string(dtype) == "bf16" ? hattn::DType::bf16 : hattn::DType::f16;
    std::vector<std::string> a16 = args;
    a16.insert(a16.end(), {"--dtype", dtype});
    r = run_cli(a16);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find(std::string("kernel: topk_ffn_dany_") + dtype + "_"), std::string::npos)
        << r.out;
    const std::vector<float> x16 = rounded(t, x), w1_16 = rounded(t, w1), w2t16 = rounded(t, w2t);
    std::vector<double> ref16, gap16;
    hattn_test::reference_topk_ffn(x16.data(), w1_16.data(), w2t16.data(), tokens, dim, d_ff, k,
                                   &ref16, &gap16);
    hattn::npy::Array y16;
    ASSERT_TRUE(hattn::npy::read_f32(dir() + "y.npy", &y16, &error)) << error;
    ASSERT_EQ(y16.data.size(), ref16.size());
    EXPECT_EQ(y16.float16, t == hattn::DType::f16) << dtype;
    for (size_t i = 0; i < ref16.size(); ++i) {
      if (gap16[i / dim] < hattn_test::kMinGap) continue;  // a near-tie may select differently
      ASSERT_NEAR(y16.data[i], ref16[i], hattn_test::sixteen_bit_output_tolerance(t, ref16[i]))
          << dtype << " index " << i;
    }
  }
  std::vector<std::string> wrong = args;
  wrong[7] = dir() + "w2_wrong.npy";
  expect_one_line_error(run_cli(wrong), "w2 must be [D, d_ff]");
  std::vector<std::string> rank = args;
  rank[3] = dir() + "q.npy";
  expect_one_line_error(run_cli(rank), "rank 2");
}

// The fidelity report runs, prints its seed and a row per k, and ends at k = Lk with an error
// at fp32 rounding level (top-k over every key is dense attention).
TEST_F(Cli, FidelityReport) {
  Result r =
      run_cli({"fidelity", "topk", "--heads", "1", "--lq", "8", "--lk", "64", "--seed", "7"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("seed 7"), std::string::npos) << r.out;
  std::istringstream lines(r.out);
  std::string line, last;
  int rows = 0;
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    long long k = 0;
    double random = 0, peaked = 0;
    if (f >> k >> random >> peaked) {
      ++rows;
      last = line;
      if (k == 64) {
        EXPECT_LT(random, 1e-4) << line;
        EXPECT_LT(peaked, 1e-4) << line;
      }
    }
  }
  EXPECT_EQ(rows, 7) << r.out;  // k = 1, 2, 4, ..., 32, 64
  expect_one_line_error(run_cli({"fidelity", "topk", "--lk", "0"}), ">= 1");
}

// A Householder basis per kv head (orthonormal, dense) and keys rotated into it, in double.
struct RotatedKeys {
  std::vector<float> basis, k_rot;
};
RotatedKeys rotate_keys(const std::vector<float>& k, int64_t heads, int64_t lk, int64_t d,
                        hattn_test::TestRng& rng) {
  RotatedKeys r;
  r.basis.resize(static_cast<size_t>(heads * d * d));
  r.k_rot.resize(k.size());
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<double> u(static_cast<size_t>(d));
    double norm = 0;
    for (double& x : u) {
      x = rng.normal();
      norm += x * x;
    }
    for (int64_t e = 0; e < d; ++e) {
      for (int64_t c = 0; c < d; ++c) {
        r.basis[static_cast<size_t>((h * d + e) * d + c)] =
            static_cast<float>((e == c ? 1.0 : 0.0) - 2.0 * u[e] * u[c] / norm);
      }
    }
    for (int64_t j = 0; j < lk; ++j) {
      for (int64_t c = 0; c < d; ++c) {
        double x = 0;
        for (int64_t e = 0; e < d; ++e) {
          x += double(k[static_cast<size_t>((h * lk + j) * d + e)]) *
               r.basis[static_cast<size_t>((h * d + e) * d + c)];
        }
        r.k_rot[static_cast<size_t>((h * lk + j) * d + c)] = static_cast<float>(x);
      }
    }
  }
  return r;
}

// run loki with k = Lk is dense attention on the unrotated keys; a bad rank is one line.
TEST_F(Cli, RunLokiMatchesDense) {
  SCOPED_TRACE(trace_);
  hattn_test::TestRng rng("cli-loki");
  RotatedKeys rk = rotate_keys(k_, 2, 9, 64, rng);
  save("basis.npy", {2, 64, 64}, rk.basis);
  save("krot.npy", {1, 2, 9, 64}, rk.k_rot);
  std::vector<std::string> args = run_args();
  args[1] = "loki";
  args[5] = dir() + "krot.npy";
  args.insert(args.end(), {"--basis", dir() + "basis.npy", "--rank", "8", "--topk", "9"});
  Result r = run_cli(args);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("kernel: loki_decode_"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("r=8 of D=64, k=9"), std::string::npos) << r.out;
  hattn_test::AttnShape shape{1, 4, 2, 7, 9, 64};
  const hattn_test::AttnStrides strides = hattn_test::dense_strides(shape);
  std::vector<double> ref;
  hattn_test::reference_attention(q_.data(), k_.data(), v_.data(), shape, strides, false, 1.0 / 8.0,
                                  &ref, nullptr);
  hattn::npy::Array o;
  std::string error;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o, &error)) << error;
  ASSERT_EQ(o.data.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_NEAR(o.data[i], ref[i], 1e-5 + 1e-4 * std::fabs(ref[i])) << "index " << i;
  }
  std::vector<std::string> with_lead = args;
  with_lead.push_back("--copy-lead");
  r = run_cli(with_lead);
  ASSERT_EQ(r.status, 0) << r.err;
  hattn::npy::Array o_lead;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o_lead, &error)) << error;
  EXPECT_EQ(o_lead.data, o.data) << "--copy-lead changed the result";
  // --dtype f16 with the leading-channel copy: the 16-bit decode kernel on the rounded q, k_rot
  // and v (k = Lk: every key), within half an f16 ulp of the float64 Loki on those values.
  std::vector<std::string> half = with_lead;
  half.insert(half.end(), {"--dtype", "f16"});
  r = run_cli(half);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("kernel: loki_decode_noncausal_"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("_f16_"), std::string::npos) << r.out;
  const hattn::DType f16 = hattn::DType::f16;
  const std::vector<float> q16 = rounded(f16, q_), k16 = rounded(f16, rk.k_rot),
                           v16 = rounded(f16, v_);
  std::vector<double> ref16, gap16;
  hattn_test::reference_loki_attention(q16.data(), k16.data(), v16.data(), rk.basis.data(), shape,
                                       strides, false, 1.0 / 8.0, 8, 9, &ref16, &gap16);
  hattn::npy::Array o16;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o16, &error)) << error;
  EXPECT_TRUE(o16.float16);
  ASSERT_EQ(o16.data.size(), ref16.size());
  for (size_t i = 0; i < ref16.size(); ++i) {
    ASSERT_NEAR(o16.data[i], ref16[i], hattn_test::sixteen_bit_output_tolerance(f16, ref16[i]))
        << "f16 index " << i;
  }
  std::vector<std::string> bad_rank = args;
  bad_rank[bad_rank.size() - 3] = "65";
  expect_one_line_error(run_cli(bad_rank), "outside [1, D=64]");
  std::vector<std::string> bad_basis = args;
  save("flat_basis.npy", {2 * 64, 64}, rk.basis);
  bad_basis[bad_basis.size() - 5] = dir() + "flat_basis.npy";
  expect_one_line_error(run_cli(bad_basis), "rank 3");
  // A per-layer basis [L, Hkv, D, D] as `calibrate loki` writes it: --layer picks one. The other
  // layers hold NaN, which the basis check would refuse if they were read.
  std::vector<float> layered(3 * rk.basis.size(), std::numeric_limits<float>::quiet_NaN());
  std::copy(rk.basis.begin(), rk.basis.end(), layered.begin() + rk.basis.size());
  save("layered_basis.npy", {3, 2, 64, 64}, layered);
  std::vector<std::string> by_layer = args;
  by_layer[by_layer.size() - 5] = dir() + "layered_basis.npy";
  expect_one_line_error(run_cli(by_layer), "choose one with --layer in [0, 2]");
  by_layer.insert(by_layer.end(), {"--layer", "1"});
  r = run_cli(by_layer);
  ASSERT_EQ(r.status, 0) << r.err;
  hattn::npy::Array o_layer;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o_layer, &error)) << error;
  EXPECT_EQ(o_layer.data, o.data) << "--layer 1 of a per-layer basis changed the result";
  by_layer.back() = "3";
  expect_one_line_error(run_cli(by_layer), "choose one with --layer in [0, 2]");
  std::vector<std::string> layer_of_one = args;
  layer_of_one.insert(layer_of_one.end(), {"--layer", "0"});
  expect_one_line_error(run_cli(layer_of_one), "--layer needs a per-layer basis");
}

// calibrate -> rotate -> run, as a user would. Needs the LAPACKE build of hattn_loki_prep; a build
// without it (the aarch64 cross build) must refuse in one line, and the test says it skipped.
TEST_F(Cli, LokiCalibrateRotateRun) {
  hattn_test::TestRng rng("cli-calibrate");
  const int64_t heads = 2, n = 400, d = 16;
  std::vector<float> keys(static_cast<size_t>(heads * n * d));
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = rng.normal() * (1.f + 3.f * (i % d == 0));
  save("cal_keys.npy", {heads, n, d}, keys);
  save("cal_k.npy", {1, heads, n, d}, keys);
  Result r = run_cli({"calibrate", "loki", "--keys", dir() + "cal_keys.npy", "--out",
                      dir() + "cal_basis.npy", "--variance", "0.5"});
  if (r.status != 0 && r.err.find("LAPACKE") != std::string::npos) {
    expect_one_line_error(r, "LAPACKE");
    GTEST_SKIP() << "this build has no Loki calibration: " << r.err;
  }
  ASSERT_EQ(r.status, 0) << r.err;
  hattn::npy::Array basis, variance;
  std::string error;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "cal_basis.npy", &basis, &error)) << error;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "cal_basis.variance.npy", &variance, &error)) << error;
  EXPECT_EQ(basis.shape, (std::vector<int64_t>{heads, d, d}));
  EXPECT_EQ(variance.shape, (std::vector<int64_t>{heads, d}));
  for (int64_t h = 0; h < heads; ++h) {
    double sum = 0;
    for (int64_t c = 0; c < d; ++c) sum += variance.data[static_cast<size_t>(h * d + c)];
    EXPECT_NEAR(sum, 1.0, 1e-5) << "head " << h;
  }
  r = run_cli({"rotate", "--keys", dir() + "cal_k.npy", "--basis", dir() + "cal_basis.npy", "--out",
               dir() + "cal_krot.npy", "--lead-out", dir() + "cal_lead.npy", "--lead", "4"});
  ASSERT_EQ(r.status, 0) << r.err;
  save("cal_q.npy", {1, heads, 1, d}, random_vec(rng, heads * d));
  r = run_cli({"run", "loki", "--q", dir() + "cal_q.npy", "--k", dir() + "cal_krot.npy", "--v",
               dir() + "cal_k.npy", "--basis", dir() + "cal_basis.npy", "--rank-fraction", "0.25",
               "--topk-fraction", "0.125", "--out", dir() + "cal_o.npy"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("r=4 of D=16, k=50"), std::string::npos) << r.out;
  std::vector<std::string> run = {"run", "loki", "--q", dir() + "cal_q.npy"};
  run.insert(run.end(), {"--k", dir() + "cal_krot.npy", "--v", dir() + "cal_k.npy"});
  run.insert(run.end(), {"--basis", dir() + "cal_basis.npy", "--rank", "4"});
  run.insert(run.end(), {"--topk-fraction", "0.125"});
  std::vector<std::string> copied = run, from_file = run;
  copied.insert(copied.end(), {"--copy-lead", "--out", dir() + "cal_o.npy"});
  r = run_cli(copied);
  ASSERT_EQ(r.status, 0) << r.err;
  // rotate's --lead-out holds the same channels as --copy-lead's copy: the same result, bitwise.
  hattn::npy::Array lead, o_copied, o_file;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "cal_lead.npy", &lead, &error)) << error;
  EXPECT_EQ(lead.shape, (std::vector<int64_t>{1, heads, n, 4}));
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "cal_o.npy", &o_copied, &error)) << error;
  from_file.insert(from_file.end(),
                   {"--k-lead", dir() + "cal_lead.npy", "--out", dir() + "cal_o2.npy"});
  r = run_cli(from_file);
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "cal_o2.npy", &o_file, &error)) << error;
  EXPECT_EQ(o_file.data, o_copied.data) << "--k-lead from rotate differs from --copy-lead";
  // A copy narrower than r, and a --lead outside [1, D], are one-line refusals.
  std::vector<std::string> wide = from_file;
  wide[11] = "8";  // --rank 8 > R = 4
  expect_one_line_error(run_cli(wide), "k_lead holds R=4");
  expect_one_line_error(
      run_cli({"rotate", "--keys", dir() + "cal_k.npy", "--basis", dir() + "cal_basis.npy", "--out",
               dir() + "x.npy", "--lead-out", dir() + "y.npy", "--lead", "17"}),
      "--lead must be in [1, D=16]");
  expect_one_line_error(run_cli({"rotate", "--keys", dir() + "cal_k.npy", "--basis",
                                 dir() + "cal_keys.npy", "--out", dir() + "x.npy"}),
                        "basis");
}

// The Loki fidelity report: a row per (d_f, k_f) of the 3 x 3 grid, finite errors, the seed.
TEST_F(Cli, LokiFidelityReport) {
  Result r = run_cli({"fidelity", "loki", "--heads", "1", "--lq", "2", "--lk", "256", "--head-dim",
                      "32", "--seed", "9"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("seed 9"), std::string::npos) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  int rows = 0;
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    double d_f = 0, k_f = 0, decaying = 0, isotropic = 0;
    if (f >> d_f >> k_f >> decaying >> isotropic) {
      ++rows;
      EXPECT_TRUE(std::isfinite(decaying) && std::isfinite(isotropic)) << line;
      EXPECT_GE(decaying, 0.0) << line;
    }
  }
  EXPECT_EQ(rows, 9) << r.out;
  expect_one_line_error(run_cli({"fidelity", "loki", "--lk", "4"}), ">= 8");
}

TEST_F(Cli, HelpWorks) {
  EXPECT_EQ(run_cli({"--help"}).status, 0);
  EXPECT_EQ(run_cli({"run", "--help"}).status, 0);
  EXPECT_EQ(run_cli({"run", "topk", "--help"}).status, 0);
  EXPECT_EQ(run_cli({"run", "topk-ffn", "--help"}).status, 0);
  EXPECT_EQ(run_cli({"run", "paged", "--help"}).status, 0);
  EXPECT_EQ(run_cli({"run", "ragged", "--help"}).status, 0);
}

TEST_F(Cli, ErrorPaths) {
  hattn_test::TestRng rng("cli-errors");
  save("rank3.npy", {4, 7, 64}, random_vec(rng, 4 * 7 * 64));
  save("q_d32.npy", {1, 4, 7, 32}, random_vec(rng, 4 * 7 * 32));
  save("q_h3.npy", {1, 3, 7, 64}, random_vec(rng, 3 * 7 * 64));
  std::ofstream(dir() + "garbage.npy") << "this is not numpy";
  std::string full = slurp(dir() + "q.npy");
  std::ofstream(dir() + "short.npy", std::ios::binary) << full.substr(0, full.size() - 10);
  {
    std::string f8 = full;  // same header length: '<f4' -> '<f8'
    f8.replace(f8.find("<f4"), 3, "<f8");
    std::ofstream(dir() + "f8.npy", std::ios::binary) << f8;
    std::string fortran = full;
    fortran.replace(fortran.find("False"), 5, "True ");
    std::ofstream(dir() + "fortran.npy", std::ios::binary) << fortran;
  }
  expect_one_line_error(run_cli(run_args("missing.npy")), "cannot open");
  expect_one_line_error(run_cli(run_args("garbage.npy")), "bad magic");
  expect_one_line_error(run_cli(run_args("short.npy")), "truncated data");
  expect_one_line_error(run_cli(run_args("f8.npy")), "float64");
  expect_one_line_error(run_cli(run_args("fortran.npy")), "Fortran-order");
  expect_one_line_error(run_cli(run_args("rank3.npy")), "rank 4");
  expect_one_line_error(run_cli(run_args("q_d32.npy")), "head dim D differs");
  expect_one_line_error(run_cli(run_args("q_h3.npy")), "multiple of key/value heads");
  std::vector<std::string> bad_scale = run_args();
  bad_scale.insert(bad_scale.end(), {"--scale", "-1"});
  expect_one_line_error(run_cli(bad_scale), "scale");
  std::vector<std::string> bad_kernel = run_args();
  bad_kernel.insert(
      bad_kernel.end(),
      {"--kernel", std::string("dense_prefill_noncausal_d128_f32_") + hattn_test::cpu_family()});
  expect_one_line_error(run_cli(bad_kernel), "compiled for D=128");
  std::vector<std::string> bad_variant = run_args();
  bad_variant[1] = "sparse";
  expect_one_line_error(run_cli(bad_variant), "unknown variant 'sparse'");
  expect_one_line_error(run_cli({"frobnicate"}), "frobnicate");
  expect_one_line_error(run_cli({"run", "dense", "--q", dir() + "q.npy"}), "required");
  std::vector<std::string> unwritable = run_args();
  unwritable[9] = "/nonexistent-dir/o.npy";
  expect_one_line_error(run_cli(unwritable), "cannot open file for writing");
}

// run sparsek: k >= Lk with w = 0 is dense causal attention (also with --dtype bf16|f16, within
// half an ulp of the output's dtype of the reference on the rounded inputs, f16 written as
// float16 .npy); run sparsek-mask writes a mask in
// [0, 1] summing to K per row, and tau; bad budgets, windows, gates and shapes are one-line errors.
TEST_F(Cli, RunSparsekAndMask) {
  SCOPED_TRACE(trace_);
  hattn_test::TestRng rng("cli-sparsek");
  save("x.npy", {1, 9, 16}, random_vec(rng, 9 * 16));
  save("wscore.npy", {2, 16}, random_vec(rng, 2 * 16));
  save("x_bad.npy", {1, 8, 16}, random_vec(rng, 8 * 16));
  auto args = [&](const std::string& budget, const std::string& window, const std::string& x) {
    return std::vector<std::string>{"run",      "sparsek",       "--q",       dir() + "q.npy",
                                    "--k",      dir() + "k.npy", "--v",       dir() + "v.npy",
                                    "--x",      dir() + x,       "--w-score", dir() + "wscore.npy",
                                    "--budget", budget,          "--window",  window,
                                    "--slope",  "0.01",          "--out",     dir() + "o.npy"};
  };
  Result r = run_cli(args("9", "0", "x.npy"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("kernel: sparsek_prefill_causal"), std::string::npos) << r.out;
  hattn_test::AttnShape shape{1, 4, 2, 7, 9, 64};
  const hattn_test::AttnStrides strides = hattn_test::dense_strides(shape);
  std::vector<double> ref;
  hattn_test::reference_attention(q_.data(), k_.data(), v_.data(), shape, strides, true, 1.0 / 8.0,
                                  &ref, nullptr);
  hattn::npy::Array o;
  std::string error;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o, &error)) << error;
  ASSERT_EQ(o.data.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_NEAR(o.data[i], ref[i], 1e-5 + 1e-4 * std::fabs(ref[i])) << "index " << i;
  }
  for (const char* dtype : {"bf16", "f16"}) {
    const hattn::DType t = std::string(dtype) == "bf16" ? hattn::DType::bf16 : hattn::DType::f16;
    std::vector<std::string> a16 = args("9", "0", "x.npy");
    a16.insert(a16.end(), {"--dtype", dtype});
    r = run_cli(a16);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("kernel: sparsek_prefill_causal_"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(std::string("_") + dtype + "_"), std::string::npos) << r.out;
    const std::vector<float> q = rounded(t, q_), k = rounded(t, k_), v = rounded(t, v_);
    std::vector<double> ref16;
    hattn_test::reference_attention(q.data(), k.data(), v.data(), shape, strides, true, 1.0 / 8.0,
                                    &ref16, nullptr);
    hattn::npy::Array o16;
    ASSERT_TRUE(hattn::npy::read_f32(dir() + "o.npy", &o16, &error)) << error;
    ASSERT_EQ(o16.data.size(), ref16.size());
    EXPECT_EQ(o16.float16, t == hattn::DType::f16) << dtype;
    for (size_t i = 0; i < ref16.size(); ++i) {
      ASSERT_NEAR(o16.data[i], ref16[i], hattn_test::sixteen_bit_output_tolerance(t, ref16[i]))
          << dtype << " index " << i;
    }
  }
  expect_one_line_error(run_cli(args("-1", "0", "x.npy")), "budget k must be >= 0");
  expect_one_line_error(run_cli(args("2", "-4", "x.npy")), "window w must be >= 0");
  expect_one_line_error(run_cli(args("2", "2", "x_bad.npy")), "x must be [B, Lk, Dm]");
  std::vector<std::string> bad_gate = args("2", "2", "x.npy");
  bad_gate.insert(bad_gate.end(), {"--gate", "sigmoid"});
  expect_one_line_error(run_cli(bad_gate), "--gate must be value or logit");

  save("z.npy", {3, 10}, random_vec(rng, 30));
  r = run_cli({"run", "sparsek-mask", "--z", dir() + "z.npy", "--budget", "4", "--out",
               dir() + "p.npy", "--tau", dir() + "tau.npy", "-v"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("sum of mask 4.0000"), std::string::npos) << r.out;
  hattn::npy::Array p, tau;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "p.npy", &p, &error)) << error;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "tau.npy", &tau, &error)) << error;
  EXPECT_EQ(p.shape, (std::vector<int64_t>{3, 10}));
  ASSERT_EQ(tau.shape, (std::vector<int64_t>{3}));
  for (int row = 0; row < 3; ++row) {
    double sum = 0;
    for (int j = 0; j < 10; ++j) {
      const float pj = p.data[row * 10 + j];
      EXPECT_TRUE(pj >= 0.f && pj <= 1.f) << pj;
      sum += pj;
    }
    EXPECT_NEAR(sum, 4.0, 1e-5);
  }
  expect_one_line_error(run_cli({"run", "sparsek-mask", "--z", dir() + "z.npy", "--budget", "-2",
                                 "--out", dir() + "p.npy"}),
                        "budget k must be >= 0");
}

// --- run paged, run ragged: the batch APIs on files ---------------------------------------------

void save_i32(const std::string& name, const std::vector<int64_t>& shape,
              const std::vector<int32_t>& x) {
  std::string error;
  ASSERT_TRUE(hattn::npy::write_i32(dir() + name, shape, x.data(), &error)) << error;
}

// The same indices as an int64 .npy (np.save's default for a list of ints): write_i32's file with
// the descr '<i4' -> '<i8' (the header keeps its length) and each value widened to 8 bytes.
void save_i64(const std::string& name, const std::vector<int64_t>& shape,
              const std::vector<int32_t>& x) {
  save_i32(name, shape, x);
  std::string bytes = slurp(dir() + name);
  const size_t data_start = bytes.size() - 4 * x.size();
  std::string wide = bytes.substr(0, data_start);
  wide.replace(wide.find("<i4"), 3, "<i8");
  for (int32_t value : x) {
    const auto u = static_cast<uint64_t>(static_cast<int64_t>(value));
    for (int b = 0; b < 8; ++b) wide += static_cast<char>((u >> (8 * b)) & 0xff);
  }
  std::ofstream(dir() + name, std::ios::binary | std::ios::trunc) << wide;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// The values the kernel sees under --dtype: float32 unchanged, 16-bit rounded to nearest even (by
// the tests' own conversion, test_support.h).
std::vector<float> dtype_values(hattn::DType t, const std::vector<float>& x) {
  if (t == hattn::DType::f32) return x;
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    y[i] = hattn_test::ref_from_16bit(t, hattn_test::ref_to_16bit(t, x[i]));
  }
  return y;
}

hattn::DType dtype_of(const std::string& name) {
  return name == "bf16"  ? hattn::DType::bf16
         : name == "f16" ? hattn::DType::f16
                         : hattn::DType::f32;
}

// The reference of one sequence: q [1, Hq, Lq, D], k and v [1, Hkv, Lk, D] dense; out, lse and
// the output over |v| (for the 16-bit tolerance) in the reference's layouts. Lk = 0: zeros, -inf.
struct SequenceRef {
  std::vector<double> out, lse, out_abs;
};
SequenceRef sequence_reference(const std::vector<float>& q, const std::vector<float>& k,
                               const std::vector<float>& v, int64_t hq, int64_t hkv, int64_t lq,
                               int64_t lk, int64_t d, bool causal, double scale) {
  SequenceRef r;
  if (lk == 0) {
    r.out.assign(static_cast<size_t>(hq * lq * d), 0.0);
    r.out_abs = r.out;
    r.lse.assign(static_cast<size_t>(hq * lq), -INFINITY);
    return r;
  }
  const hattn_test::AttnShape shape{1, hq, hkv, lq, lk, d};
  const hattn_test::AttnStrides strides = hattn_test::dense_strides(shape);
  std::vector<float> v_abs(v.size());
  for (size_t i = 0; i < v.size(); ++i) v_abs[i] = std::fabs(v[i]);
  std::vector<double> unused;
  hattn_test::reference_attention(q.data(), k.data(), v.data(), shape, strides, causal, scale,
                                  &r.out, &r.lse);
  hattn_test::reference_attention(q.data(), k.data(), v_abs.data(), shape, strides, causal, scale,
                                  &r.out_abs, &unused);
  return r;
}

// out and lse files against the reference: float32 within 1e-5 + 1e-4 |ref|, 16-bit within
// sixteen_bit_tolerance; lse (float32 in every dtype) within 1e-4 (1 + |ref|), -inf where no key
// is visible.
void expect_files_match(hattn::DType t, const std::vector<int64_t>& out_shape,
                        const std::vector<double>& ref, const std::vector<double>& ref_abs,
                        const std::vector<int64_t>& lse_shape, const std::vector<double>& ref_lse) {
  hattn::npy::Array o, l;
  std::string error;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "batch_o.npy", &o, &error)) << error;
  ASSERT_TRUE(hattn::npy::read_f32(dir() + "batch_lse.npy", &l, &error)) << error;
  EXPECT_EQ(o.shape, out_shape);
  EXPECT_EQ(l.shape, lse_shape);
  ASSERT_EQ(o.data.size(), ref.size());
  ASSERT_EQ(l.data.size(), ref_lse.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    const double tol = t == hattn::DType::f32
                           ? 1e-5 + 1e-4 * std::fabs(ref[i])
                           : hattn_test::sixteen_bit_tolerance(t, ref[i], ref_abs[i]);
    ASSERT_NEAR(o.data[i], ref[i], tol) << "out index " << i;
  }
  for (size_t i = 0; i < ref_lse.size(); ++i) {
    if (std::isinf(ref_lse[i])) {
      ASSERT_TRUE(std::isinf(l.data[i]) && l.data[i] < 0) << "lse index " << i << " " << l.data[i];
    } else {
      ASSERT_NEAR(l.data[i], ref_lse[i], 1e-4 * (1 + std::fabs(ref_lse[i]))) << "lse index " << i;
    }
  }
}

// A paged cache as files: pages [P, Hkv, S, D] (head-major), handed out in a shuffled order;
// every slot no sequence holds (unused pages, the tail of a sequence's last page) is NaN, so a
// kernel that reads one shows it, and the table's entries past a sequence's pages are garbage.
struct PagedFiles {
  static constexpr int64_t kB = 3, kHq = 4, kHkv = 2, kD = 64, kS = 4, kPagesPerSeq = 5, kP = 14;
  std::vector<int32_t> lengths = {5, 16, 1};
  std::vector<int32_t> table;
  std::vector<float> k_pages, v_pages;

  explicit PagedFiles(hattn_test::TestRng& rng)
      : table(static_cast<size_t>(kB * kPagesPerSeq)),
        k_pages(static_cast<size_t>(kP * kHkv * kS * kD), NAN),
        v_pages(k_pages) {
    std::vector<int32_t> ids(kP);
    for (int32_t i = 0; i < kP; ++i) ids[static_cast<size_t>(i)] = i;
    std::shuffle(ids.begin(), ids.end(), rng.engine());
    size_t next = 0;
    for (int64_t b = 0; b < kB; ++b) {
      const int64_t used = (lengths[static_cast<size_t>(b)] + kS - 1) / kS;
      for (int64_t i = 0; i < kPagesPerSeq; ++i) {
        table[static_cast<size_t>(b * kPagesPerSeq + i)] =
            i < used ? ids.at(next++) : (i % 2 ? -12345 : 1 << 30);
      }
      for (int64_t t = 0; t < lengths[static_cast<size_t>(b)]; ++t) {
        for (int64_t h = 0; h < kHkv; ++h) {
          for (int64_t x = 0; x < kD; ++x) {
            k_pages[static_cast<size_t>(offset(b, t, h) + x)] = rng.normal();
            v_pages[static_cast<size_t>(offset(b, t, h) + x)] = rng.normal();
          }
        }
      }
    }
  }
  // Element offset of sequence b's token t, kv head h, in the pages: plain indexing.
  int64_t offset(int64_t b, int64_t t, int64_t h) const {
    const int64_t page = table[static_cast<size_t>(b * kPagesPerSeq + t / kS)];
    return ((page * kHkv + h) * kS + t % kS) * kD;
  }
  // Sequence b's cached tokens of `pages` gathered as [1, Hkv, lengths[b], D].
  std::vector<float> gather(const std::vector<float>& pages, int64_t b) const {
    const int64_t len = lengths[static_cast<size_t>(b)];
    std::vector<float> out(static_cast<size_t>(kHkv * len * kD));
    for (int64_t h = 0; h < kHkv; ++h) {
      for (int64_t t = 0; t < len; ++t) {
        for (int64_t x = 0; x < kD; ++x) {
          out[static_cast<size_t>((h * len + t) * kD + x)] =
              pages[static_cast<size_t>(offset(b, t, h) + x)];
        }
      }
    }
    return out;
  }
};

std::vector<std::string> paged_args(const std::string& table = "batch_pt.npy") {
  return {"run",          "paged",
          "--q",          dir() + "batch_q.npy",
          "--k-pages",    dir() + "batch_kp.npy",
          "--v-pages",    dir() + "batch_vp.npy",
          "--page-table", dir() + table,
          "--lengths",    dir() + "batch_len.npy",
          "--out",        dir() + "batch_o.npy"};
}

// run paged: decode (Lq = 2, the batch kernel) and chunked prefill (Lq = 10, gathered per
// sequence), causal (with --scale) or not, f32 and bf16, against the reference on each sequence's
// pages gathered by plain indexing. The causal runs read the table from an int64 .npy (np.save's
// default for Python ints).
TEST_F(Cli, RunPagedMatchesReference) {
  hattn_test::TestRng rng("cli-paged");
  SCOPED_TRACE(rng.description());
  using P = PagedFiles;
  const PagedFiles p(rng);
  save("batch_kp.npy", {P::kP, P::kHkv, P::kS, P::kD}, p.k_pages);
  save("batch_vp.npy", {P::kP, P::kHkv, P::kS, P::kD}, p.v_pages);
  save_i32("batch_pt.npy", {P::kB, P::kPagesPerSeq}, p.table);
  save_i64("batch_pt64.npy", {P::kB, P::kPagesPerSeq}, p.table);
  save_i32("batch_len.npy", {P::kB}, p.lengths);
  for (int64_t lq : {int64_t{2}, int64_t{10}}) {
    const std::vector<float> q = random_vec(rng, static_cast<size_t>(P::kB * P::kHq * lq * P::kD));
    save("batch_q.npy", {P::kB, P::kHq, lq, P::kD}, q);
    for (const char* dtype : {"f32", "bf16"}) {
      for (bool causal : {false, true}) {
        SCOPED_TRACE(std::string(dtype) + " Lq=" + std::to_string(lq) +
                     (causal ? " causal" : " non-causal"));
        const hattn::DType t = dtype_of(dtype);
        const double scale = causal ? 0.2 : 1.0 / 8.0;
        std::vector<std::string> args = paged_args(causal ? "batch_pt64.npy" : "batch_pt.npy");
        args.insert(args.end(), {"--lse", dir() + "batch_lse.npy", "--dtype", dtype});
        if (causal) args.insert(args.end(), {"--causal", "--scale", "0.2"});
        const Result r = run_cli(args);
        ASSERT_EQ(r.status, 0) << r.err;
        EXPECT_NE(r.out.find(lq <= 8 ? "kernel: dense_paged_decode_" : "kernel: dense_prefill_"),
                  std::string::npos)
            << r.out;
        EXPECT_NE(r.out.find(std::string("_") + dtype + "_"), std::string::npos) << r.out;
        EXPECT_NE(r.out.find("GB/s"), std::string::npos) << r.out;
        const std::vector<float> qt = dtype_values(t, q), kt = dtype_values(t, p.k_pages),
                                 vt = dtype_values(t, p.v_pages);
        std::vector<double> ref, ref_abs, ref_lse;
        for (int64_t b = 0; b < P::kB; ++b) {
          const size_t q0 = static_cast<size_t>(b * P::kHq * lq * P::kD);
          const std::vector<float> qb(
              qt.begin() + static_cast<std::ptrdiff_t>(q0),
              qt.begin() + static_cast<std::ptrdiff_t>(q0 + P::kHq * lq * P::kD));
          const SequenceRef s =
              sequence_reference(qb, p.gather(kt, b), p.gather(vt, b), P::kHq, P::kHkv, lq,
                                 p.lengths[static_cast<size_t>(b)], P::kD, causal, scale);
          ref.insert(ref.end(), s.out.begin(), s.out.end());
          ref_abs.insert(ref_abs.end(), s.out_abs.begin(), s.out_abs.end());
          ref_lse.insert(ref_lse.end(), s.lse.begin(), s.lse.end());
        }
        expect_files_match(t, {P::kB, P::kHq, lq, P::kD}, ref, ref_abs, {P::kB, P::kHq, lq},
                           ref_lse);
      }
    }
  }
}

// run paged refusals: a page index out of range (the library's message, naming the sequence and
// the entry), a float32 page table, table and lengths of different batches; each one line, a
// non-zero status, and no out file written.
TEST_F(Cli, RunPagedRefusals) {
  hattn_test::TestRng rng("cli-paged-refusals");
  SCOPED_TRACE(rng.description());
  using P = PagedFiles;
  const PagedFiles p(rng);
  save("batch_kp.npy", {P::kP, P::kHkv, P::kS, P::kD}, p.k_pages);
  save("batch_vp.npy", {P::kP, P::kHkv, P::kS, P::kD}, p.v_pages);
  save_i32("batch_len.npy", {P::kB}, p.lengths);
  save("batch_q.npy", {P::kB, P::kHq, 1, P::kD}, random_vec(rng, P::kB * P::kHq * P::kD));
  std::vector<int32_t> bad = p.table;
  bad[1 * P::kPagesPerSeq + 2] = P::kP;  // sequence 1 holds 16 tokens: pages 0 .. 3 are read
  save_i32("batch_pt_bad.npy", {P::kB, P::kPagesPerSeq}, bad);
  std::vector<float> as_float(p.table.begin(), p.table.end());
  save("batch_pt_f32.npy", {P::kB, P::kPagesPerSeq}, as_float);
  save_i32("batch_pt_2rows.npy", {2, P::kPagesPerSeq},
           std::vector<int32_t>(p.table.begin(), p.table.begin() + 2 * P::kPagesPerSeq));
  const std::string out = dir() + "batch_o.npy";
  std::remove(out.c_str());
  expect_one_line_error(run_cli(paged_args("batch_pt_bad.npy")),
                        "sequence 1: page_table[1][2] = 14 is out of range [0, P = 14)");
  EXPECT_FALSE(file_exists(out)) << "a refused call wrote " << out;
  expect_one_line_error(run_cli(paged_args("batch_pt_f32.npy")),
                        "batch_pt_f32.npy: dtype '<f4' (float32) is not supported for indices; "
                        "hattn reads int32 ('<i4')");
  EXPECT_FALSE(file_exists(out)) << "a refused call wrote " << out;
  expect_one_line_error(run_cli(paged_args("batch_pt_2rows.npy")),
                        "page_table has 2 rows but " + dir() + "batch_len.npy holds 3 lengths");
  EXPECT_FALSE(file_exists(out)) << "a refused call wrote " << out;
  // The key pages given in the page table's place (arguments swapped): refused by their dtype.
  std::vector<std::string> swapped = paged_args();
  swapped[9] = dir() + "batch_kp.npy";
  expect_one_line_error(run_cli(swapped), "dtype '<f4' (float32) is not supported for indices");
  EXPECT_FALSE(file_exists(out)) << "a refused call wrote " << out;
}

// run ragged: four packed sequences (one with no keys: zeros and lse -inf; one with Lq = 10 > Lk
// = 6: prefill, and causal rows that see nothing), causal or not, f32 and bf16, against the
// reference on each sequence's rows gathered by plain indexing; offsets that do not end at the
// packed length are the library's refusal, and no out file is written.
TEST_F(Cli, RunRaggedMatchesReference) {
  hattn_test::TestRng rng("cli-ragged");
  SCOPED_TRACE(rng.description());
  const int64_t hq = 4, hkv = 2, d = 32;
  const std::vector<int32_t> lq = {3, 2, 10, 1}, lk = {7, 0, 6, 1};
  std::vector<int32_t> qo = {0}, ko = {0};
  for (size_t b = 0; b < lq.size(); ++b) {
    qo.push_back(qo.back() + lq[b]);
    ko.push_back(ko.back() + lk[b]);
  }
  const int64_t tq = qo.back(), tk = ko.back(), batch = static_cast<int64_t>(lq.size());
  const std::vector<float> q = random_vec(rng, static_cast<size_t>(tq * hq * d)),
                           k = random_vec(rng, static_cast<size_t>(tk * hkv * d)),
                           v = random_vec(rng, static_cast<size_t>(tk * hkv * d));
  save("batch_q.npy", {tq, hq, d}, q);
  save("batch_k.npy", {tk, hkv, d}, k);
  save("batch_v.npy", {tk, hkv, d}, v);
  save_i32("batch_qo.npy", {batch + 1}, qo);
  save_i32("batch_ko.npy", {batch + 1}, ko);
  auto args = [&](const std::string& k_offsets) {
    return std::vector<std::string>{"run",         "ragged",
                                    "--q",         dir() + "batch_q.npy",
                                    "--k",         dir() + "batch_k.npy",
                                    "--v",         dir() + "batch_v.npy",
                                    "--q-offsets", dir() + "batch_qo.npy",
                                    "--k-offsets", dir() + k_offsets,
                                    "--out",       dir() + "batch_o.npy"};
  };
  // Rows r0 .. r0 + rows - 1 of a packed [T, H, D] array as a dense [1, H, rows, D] one.
  auto rows_of = [](const std::vector<float>& x, int64_t heads, int64_t r0, int64_t rows) {
    std::vector<float> out(static_cast<size_t>(heads * rows * d));
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t c = 0; c < d; ++c) {
          out[static_cast<size_t>((h * rows + i) * d + c)] =
              x[static_cast<size_t>(((r0 + i) * heads + h) * d + c)];
        }
      }
    }
    return out;
  };
  for (const char* dtype : {"f32", "bf16"}) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(std::string(dtype) + (causal ? " causal" : " non-causal"));
      const hattn::DType t = dtype_of(dtype);
      std::vector<std::string> a = args("batch_ko.npy");
      a.insert(a.end(), {"--lse", dir() + "batch_lse.npy", "--dtype", dtype, "--repeat", "2"});
      if (causal) a.push_back("--causal");
      const Result r = run_cli(a);
      ASSERT_EQ(r.status, 0) << r.err;
      EXPECT_NE(r.out.find("kernel: dense_"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("GFLOP/s"), std::string::npos) << r.out;
      const std::vector<float> qt = dtype_values(t, q), kt = dtype_values(t, k),
                               vt = dtype_values(t, v);
      // The packed layouts: out [Tq, Hq, D], lse [1, Hq, Tq].
      std::vector<double> ref(static_cast<size_t>(tq * hq * d)), ref_abs(ref.size()),
          ref_lse(static_cast<size_t>(hq * tq));
      for (size_t b = 0; b < lq.size(); ++b) {
        const SequenceRef s = sequence_reference(
            rows_of(qt, hq, qo[b], lq[b]), rows_of(kt, hkv, ko[b], lk[b]),
            rows_of(vt, hkv, ko[b], lk[b]), hq, hkv, lq[b], lk[b], d, causal, 1.0 / std::sqrt(d));
        for (int64_t h = 0; h < hq; ++h) {
          for (int64_t i = 0; i < lq[b]; ++i) {
            ref_lse[static_cast<size_t>(h * tq + qo[b] + i)] =
                s.lse[static_cast<size_t>(h * lq[b] + i)];
            for (int64_t c = 0; c < d; ++c) {
              const size_t packed = static_cast<size_t>(((qo[b] + i) * hq + h) * d + c),
                           own = static_cast<size_t>((h * lq[b] + i) * d + c);
              ref[packed] = s.out[own];
              ref_abs[packed] = s.out_abs[own];
            }
          }
        }
      }
      expect_files_match(t, {tq, hq, d}, ref, ref_abs, {1, hq, tq}, ref_lse);
    }
  }
  std::vector<int32_t> short_ko = ko;
  short_ko.back() -= 1;
  save_i32("batch_ko_short.npy", {batch + 1}, short_ko);
  save_i32("batch_ko_3.npy", {3}, {0, 7, 7});
  const std::string out = dir() + "batch_o.npy";
  std::remove(out.c_str());
  expect_one_line_error(run_cli(args("batch_ko_short.npy")),
                        "k_offsets[4] = 13 must equal the packed tokens 14 of k");
  EXPECT_FALSE(file_exists(out)) << "a refused call wrote " << out;
  expect_one_line_error(run_cli(args("batch_ko_3.npy")), "both are [B + 1]");
  EXPECT_FALSE(file_exists(out)) << "a refused call wrote " << out;
}

}  // namespace

// `run el` and `run el --standard` on a weight directory (biases partly missing) agree with the
// double-precision MHA reference, also with --dtype f16 (every input rounded, y within half an
// ulp of the reference on the rounded values); a bad head count and a missing weights directory
// are one-line errors.
TEST_F(Cli, RunElMatchesReference) {
  hattn_test::TestRng rng("cli-el");
  SCOPED_TRACE(rng.description());
  const int64_t samples = 2, beam = 2, n = 11, dm = 64, heads = 4;
  hattn_test::MhaHostWeights w;
  w.dm = dm;
  std::vector<float>* mats[4] = {&w.wq, &w.wk, &w.wv, &w.wo};
  const char* names[4] = {"q", "k", "v", "o"};
  const std::string wdir = dir() + "el_weights";
  ::mkdir(wdir.c_str(), 0755);
  for (int i = 0; i < 4; ++i) {
    *mats[i] = random_vec(rng, dm * dm);
    for (float& x : *mats[i]) x *= 0.125f;  // 1/sqrt(Dm): activations O(1)
    save("el_weights/w" + std::string(names[i]) + ".npy", {dm, dm}, *mats[i]);
  }
  w.bk = random_vec(rng, dm);  // bq and bo absent: zero
  w.bv = random_vec(rng, dm);
  save("el_weights/bk.npy", {dm}, w.bk);
  save("el_weights/bv.npy", {dm}, w.bv);
  std::vector<float> x = random_vec(rng, samples * beam * dm),
                     mem = random_vec(rng, samples * n * dm);
  save("el_x.npy", {samples * beam, 1, dm}, x);
  save("el_mem.npy", {samples, n, dm}, mem);
  const std::vector<std::string> args = {"run",       "el",
                                         "--x",       dir() + "el_x.npy",
                                         "--memory",  dir() + "el_mem.npy",
                                         "--weights", wdir,
                                         "--heads",   "4",
                                         "--beam",    "2",
                                         "--out",     dir() + "el_y.npy"};
  // f32, and f16: every input rounded (the reference on the rounded values), y a float16 .npy
  // within half an ulp of it.
  for (const bool f16 : {false, true}) {
    hattn_test::MhaHostWeights wt = w;
    std::vector<float> xt = x, memt = mem;
    if (f16) {
      for (std::vector<float>* t : {&wt.wq, &wt.wk, &wt.wv, &wt.wo, &wt.bk, &wt.bv, &xt, &memt}) {
        *t = rounded(hattn::DType::f16, *t);
      }
    }
    std::vector<float> ref(x.size());
    hattn_test::reference_mha(xt.data(), memt.data(), wt, samples * beam, 1, n, heads, beam, false,
                              nullptr, 1.0 / 4.0, ref.data());
    for (bool standard : {false, true}) {
      std::vector<std::string> a = args;
      if (f16) a.insert(a.end(), {"--dtype", "f16"});
      if (standard) a.push_back("--standard");
      Result r = run_cli(a);
      ASSERT_EQ(r.status, 0) << r.err;
      EXPECT_NE(r.out.find(standard ? "standard MHA"
                                    : std::string("kernel el_dany_") + (f16 ? "f16kv_" : "f32_")),
                std::string::npos)
          << r.out;
      hattn::npy::Array y;
      std::string error;
      ASSERT_TRUE(hattn::npy::read_f32(dir() + "el_y.npy", &y, &error)) << error;
      EXPECT_EQ(y.shape, (std::vector<int64_t>{samples * beam, 1, dm}));
      EXPECT_EQ(y.float16, f16);
      ASSERT_EQ(y.data.size(), ref.size());
      for (size_t i = 0; i < ref.size(); ++i) {
        const double tol = f16 ? hattn_test::sixteen_bit_output_tolerance(hattn::DType::f16, ref[i])
                               : 1e-5 + 1e-5 * std::fabs(ref[i]);
        ASSERT_NEAR(y.data[i], ref[i], tol) << (standard ? "standard" : "el") << " index " << i;
      }
    }
  }
  std::vector<std::string> bad = args;
  bad[9] = "3";
  expect_one_line_error(run_cli(bad), "not divisible by heads=3");
  bad = args;
  bad[7] = dir() + "no_such_dir";
  expect_one_line_error(run_cli(bad), "--weights must be a directory");
}
