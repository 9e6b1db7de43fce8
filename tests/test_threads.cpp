// hattn::attention from several threads at once: results stay exact and error messages stay with
// the call that caused them. References are computed up front on the main thread; worker threads
// make no gtest assertions and hand their failures back as strings.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "hattn/hattn.h"
#include "test_support.h"
#include "variants.h"

namespace hattn_test {
namespace {

using hattn::AttentionOptions;
using hattn::Status;
using hattn::StatusCode;

constexpr int kThreads = 8;

// Eight different calls: prefill, decode (several splits), causal, GQA/MQA, generic D, strided.
std::vector<DenseCase> thread_cases() {
  std::vector<DenseCase> v;
  v.push_back(make_case("prefill_gqa_d64", {1, 4, 2, 128, 256, 64}, false));
  v.push_back(make_case("prefill_causal_d128", {1, 2, 2, 200, 200, 128}, true));
  v.push_back(make_case("decode_gqa_d64", {1, 8, 2, 1, 2048, 64}, false));
  DenseCase c = make_case("decode_lq3_mqa_causal_d128", {1, 4, 1, 3, 1500, 128}, true);
  c.decode_splits = 3;
  v.push_back(c);
  c = make_case("prefill_strided_causal_d80", {2, 4, 2, 60, 90, 80}, true);
  c.q_layout = Layout::kBLHD;
  c.k_layout = Layout::kPadded;
  c.v_layout = Layout::kHBLD;
  c.out_layout = Layout::kPadded;
  c.lse_layout = Layout::kPadded;
  v.push_back(c);
  v.push_back(make_case("causal_lq_gt_lk_d64", {1, 2, 2, 100, 40, 64}, true));
  c = make_case("forced_generic_d64", {1, 2, 2, 50, 70, 64}, false);
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.family != "cuda" && k.variant == "dense" && k.head_dim == 0 && !k.causal &&
        k.phase == "prefill" && k.dtype == "f32")
      c.kernel = k.name;
  }
  v.push_back(c);
  c = make_case("decode_mqa_d80", {1, 8, 1, 1, 1000, 80}, false);
  c.decode_splits = 7;
  c.lse_layout = Layout::kPadded;
  v.push_back(c);
  return v;
}

// Joins per-thread failure lists into one message (first few per thread), or "".
std::string collect(const std::vector<std::vector<std::string>>& failures) {
  std::string msg;
  for (size_t t = 0; t < failures.size(); ++t) {
    if (failures[t].empty()) continue;
    msg +=
        "\nthread " + std::to_string(t) + ": " + std::to_string(failures[t].size()) + " failure(s)";
    for (size_t i = 0; i < failures[t].size() && i < 3; ++i) msg += "\n  " + failures[t][i];
  }
  return msg;
}

// Each thread repeatedly runs its own case (and, every third iteration, its neighbour's, reading
// the same inputs concurrently), checking every result against the precomputed reference, and in
// between makes calls that fail validation with a message unique to the thread and iteration.
TEST(Threads, ConcurrentCallsMatchReferenceAndKeepTheirErrors) {
  const std::vector<DenseCase> cases = thread_cases();
  ASSERT_EQ(static_cast<int>(cases.size()), kThreads);
  std::vector<DenseProblem> problems;
  for (const DenseCase& c : cases) {
    TestRng rng(c.name);
    problems.push_back(make_problem(c, rng));
  }
  // Serial run first: a failure here is not a threading problem.
  for (const DenseProblem& p : problems) {
    std::string failure = run_and_check(p);
    ASSERT_TRUE(failure.empty()) << "single-threaded: " << failure;
  }

  constexpr int kIterations = 30;
  std::vector<std::vector<std::string>> failures(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::string>& fail = failures[static_cast<size_t>(t)];
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      const DenseProblem& own = problems[static_cast<size_t>(t)];
      for (int it = 0; it < kIterations; ++it) {
        const DenseProblem& p =
            (it % 3 == 2) ? problems[static_cast<size_t>((t + 1) % kThreads)] : own;
        std::string f = run_and_check(p);
        if (!f.empty()) fail.push_back("iteration " + std::to_string(it) + ": " + f);

        // A refusal whose message carries a value unique to this thread and iteration.
        const int splits = -(1000 + 100 * t + it);
        AttentionOptions o = options_for(own.c, nullptr);
        o.decode_splits = splits;
        HostTensor out(
            {own.c.shape.batch, own.c.shape.q_heads, own.c.shape.lq, own.c.shape.head_dim},
            Layout::kContiguous);
        Status s = hattn::attention(own.q.view(), own.k.view(), own.v.view(), out.view(), o);
        if (s.code != StatusCode::invalid_argument ||
            s.message.find(std::to_string(splits)) == std::string::npos) {
          fail.push_back("decode_splits=" + std::to_string(splits) + " refused with " +
                         hattn::to_string(s.code) + ": \"" + s.message + "\"");
        }
        // An unknown kernel name, unique to this thread and iteration.
        o = options_for(own.c, nullptr);
        const std::string name =
            "no_such_kernel_thread" + std::to_string(t) + "_iter" + std::to_string(it) + "_end";
        o.kernel = name;
        s = hattn::attention(own.q.view(), own.k.view(), own.v.view(), out.view(), o);
        if (s.ok() || s.message.find(name) == std::string::npos ||
            s.message.find("no_such_kernel_thread") != s.message.rfind("no_such_kernel_thread")) {
          fail.push_back("unknown kernel " + name + " refused with " + hattn::to_string(s.code) +
                         ": \"" + s.message + "\"");
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  std::string msg = collect(failures);
  EXPECT_TRUE(msg.empty()) << msg;
}

// Many threads, many quick calls: half refused (each with a thread-specific reason), half small
// valid calls checked against the reference. Messages must match the caller's own refusal.
TEST(Threads, RefusalMessagesDoNotLeakBetweenThreads) {
  DenseCase c = make_case("small", {1, 2, 1, 9, 40, 64}, true);
  TestRng rng(c.name);
  SCOPED_TRACE(rng.description());
  const DenseProblem p = make_problem(c, rng);

  constexpr int kIterations = 300;
  std::vector<std::vector<std::string>> failures(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::string>& fail = failures[static_cast<size_t>(t)];
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      const AttnShape& s = p.c.shape;
      HostTensor out({s.batch, s.q_heads, s.lq, s.head_dim}, Layout::kContiguous);
      for (int it = 0; it < kIterations; ++it) {
        if (fail.size() > 5) break;
        if ((t + it) % 2 == 0) {
          std::string f = run_and_check(p);
          if (!f.empty()) fail.push_back(f);
          continue;
        }
        // A thread-specific refusal: each kind of thread breaks a different argument.
        AttentionOptions o = options_for(p.c, nullptr);
        hattn::TensorView q = p.q.view(), k = p.k.view(), v = p.v.view(), ov = out.view();
        std::string expect;
        StatusCode code = StatusCode::invalid_argument;
        switch (t % 4) {
          case 0:
            o.has_scale = true;
            o.scale = -static_cast<float>(t + 1);
            expect = "scale";
            break;
          case 1:
            o.decode_splits = -(t * 1000 + it);
            expect = std::to_string(o.decode_splits);
            break;
          case 2:
            k.data = nullptr;
            expect = "null";
            break;
          case 3:
            ov.shape[2] = s.lq + 1 + t;  // out shape differs from q
            expect = "[" + std::to_string(s.batch) + ", " + std::to_string(s.q_heads) + ", " +
                     std::to_string(s.lq + 1 + t) + ", ";
            break;
        }
        Status st = hattn::attention(q, k, v, ov, o);
        if (st.code != code || st.message.find(expect) == std::string::npos) {
          fail.push_back("iteration " + std::to_string(it) + ": expected " +
                         hattn::to_string(code) + " mentioning \"" + expect + "\", got " +
                         hattn::to_string(st.code) + ": \"" + st.message + "\"");
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  std::string msg = collect(failures);
  EXPECT_TRUE(msg.empty()) << msg;
}

// Every variant in tests/variants.cpp at once: each thread runs a rotating sequence of variants
// and shapes, each on its own copy of the tensors, and every result must equal the serial
// call's bit for bit (the kernels' results do not depend on what else runs).
TEST(Threads, MixedVariantsMatchSerialCallsBitwise) {
  struct Job {
    const Variant* v;
    AttnShape shape;
    Knobs knobs;
    std::vector<HostTensor> tensors;
    std::vector<float> serial;
  };
  std::vector<Job> jobs;
  for (const Variant& v : all_variants()) {
    for (AttnShape s : {AttnShape{1, 4, 2, 33, 150, 64}, AttnShape{2, 4, 1, 1, 1200, 48}}) {
      TestRng rng(v.name + "_" + describe_shape(s));
      Job j{&v, s, v.defaults, make_tensors(v, s, rng), {}};
      j.knobs.causal = v.has_causal;
      // The serial result, itself checked against the reference first.
      ASSERT_EQ(run_and_compare(v, &j.tensors, s, j.knobs), "") << rng.description();
      std::string error;
      j.serial = run_result(v, &j.tensors, j.knobs, &error);
      ASSERT_EQ(error, "");
      jobs.push_back(std::move(j));
    }
  }
  constexpr int kIterations = 12;
  std::vector<std::vector<std::string>> failures(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::string>& fail = failures[static_cast<size_t>(t)];
      std::vector<std::vector<HostTensor>> own;  // this thread's copies of every job's tensors
      for (const Job& j : jobs) own.push_back(j.tensors);
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      for (int it = 0; it < kIterations; ++it) {
        const size_t n = static_cast<size_t>(t + it * 3) % jobs.size();
        const Job& j = jobs[n];
        std::string error;
        const std::vector<float> got = run_result(*j.v, &own[n], j.knobs, &error);
        if (!error.empty()) {
          fail.push_back(error);
        } else if (got.size() != j.serial.size() ||
                   std::memcmp(got.data(), j.serial.data(), got.size() * sizeof(float)) != 0) {
          fail.push_back(j.v->name + " " + describe_shape(j.shape) +
                         ": differs from the serial call");
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  std::string msg = collect(failures);
  EXPECT_TRUE(msg.empty()) << msg;
}

}  // namespace
}  // namespace hattn_test
