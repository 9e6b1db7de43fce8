// The CUDA kernels, run for real on a GPU and compared with the same double-precision reference
// as the CPU kernels. Inputs are drawn on the host (printed seeds), copied to device memory with
// their strides and padding, and `out`/`lse` are copied there poisoned (NaN), so unwritten
// elements and writes into padding are caught after the copy back.
//
// Without a usable GPU (no driver, no device, or a build without CUDA kernels) every test here
// skips and prints why. scripts/gpu_bundle.sh carries this binary to a GPU machine.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "test_support.h"

namespace {

using hattn::AttentionOptions;
using hattn::Dispatch;
using hattn::Status;
using hattn::TensorView;
using namespace hattn_test;

// The driver calls this test makes itself (declared here: building needs no CUDA toolkit).
struct TestDriver {
  using CUdeviceptr = unsigned long long;
  int (*cuInit)(unsigned) = nullptr;
  int (*cuDeviceGet)(int*, int) = nullptr;
  int (*cuDevicePrimaryCtxRetain)(void**, int) = nullptr;
  int (*cuCtxSetCurrent)(void*) = nullptr;
  int (*cuMemAlloc)(CUdeviceptr*, size_t) = nullptr;
  int (*cuMemFree)(CUdeviceptr) = nullptr;
  int (*cuMemcpyHtoD)(CUdeviceptr, const void*, size_t) = nullptr;
  int (*cuMemcpyDtoH)(void*, CUdeviceptr, size_t) = nullptr;
  int (*cuCtxSynchronize)() = nullptr;
  int (*cuStreamCreate)(void**, unsigned) = nullptr;
  int (*cuStreamSynchronize)(void*) = nullptr;
  int (*cuStreamDestroy)(void*) = nullptr;
  std::string error;

  template <typename F>
  void get(void* lib, const char* name, F* fn) {
    *fn = reinterpret_cast<F>(dlsym(lib, name));
    if (*fn == nullptr && error.empty()) error = std::string("driver lacks ") + name;
  }

  TestDriver() {
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (lib == nullptr) lib = dlopen("libcuda.so", RTLD_NOW | RTLD_GLOBAL);
    if (lib == nullptr) {
      error = "libcuda not loadable";
      return;
    }
    get(lib, "cuInit", &cuInit);
    get(lib, "cuDeviceGet", &cuDeviceGet);
    get(lib, "cuDevicePrimaryCtxRetain", &cuDevicePrimaryCtxRetain);
    get(lib, "cuCtxSetCurrent", &cuCtxSetCurrent);
    get(lib, "cuMemAlloc_v2", &cuMemAlloc);
    get(lib, "cuMemFree_v2", &cuMemFree);
    get(lib, "cuMemcpyHtoD_v2", &cuMemcpyHtoD);
    get(lib, "cuMemcpyDtoH_v2", &cuMemcpyDtoH);
    get(lib, "cuCtxSynchronize", &cuCtxSynchronize);
    get(lib, "cuStreamCreate", &cuStreamCreate);
    get(lib, "cuStreamSynchronize", &cuStreamSynchronize);
    get(lib, "cuStreamDestroy_v2", &cuStreamDestroy);
    if (!error.empty()) return;
    int dev = 0;
    void* ctx = nullptr;
    if (cuInit(0) != 0 || cuDeviceGet(&dev, 0) != 0 || cuDevicePrimaryCtxRetain(&ctx, dev) != 0 ||
        cuCtxSetCurrent(ctx) != 0) {
      error = "could not make device 0's primary context current";
    }
  }
};

TestDriver& driver() {
  static TestDriver d;
  return d;
}

// Bytes a view spans, from its first to its last element.
size_t span_bytes(const TensorView& t) {
  int64_t last = 0;
  for (int i = 0; i < t.rank; ++i) last += (t.shape[i] - 1) * t.strides[i];
  const size_t element = t.dtype == hattn::DType::f32 ? sizeof(float) : sizeof(uint16_t);
  return static_cast<size_t>(last + 1) * element;
}

// A device copy of a host view's span; its view has the same shape and strides.
struct DeviceCopy {
  TestDriver::CUdeviceptr ptr = 0;
  size_t bytes = 0;
  const TensorView* host = nullptr;
  TensorView device;

  explicit DeviceCopy(const TensorView& h) : bytes(span_bytes(h)), host(&h) {
    TestDriver& d = driver();
    EXPECT_EQ(d.cuMemAlloc(&ptr, bytes), 0);
    EXPECT_EQ(d.cuMemcpyHtoD(ptr, h.data, bytes), 0);
    device = h;
    device.data = reinterpret_cast<void*>(static_cast<uintptr_t>(ptr));
    device.device = hattn::Device::cuda;
  }
  void copy_back() { EXPECT_EQ(driver().cuMemcpyDtoH(host->data, ptr, bytes), 0); }
  ~DeviceCopy() { driver().cuMemFree(ptr); }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
};

void* g_stream = nullptr;  // when set, calls run on this stream (the caller's-stream path)

Status run_on_device(const TensorView& q, const TensorView& k, const TensorView& v,
                     const TensorView& out, const AttentionOptions& options, Dispatch* chosen) {
  DeviceCopy dq(q), dk(k), dv(v), dout(out);
  AttentionOptions o = options;
  o.cuda_stream = g_stream;
  TensorView lse_device;
  std::unique_ptr<DeviceCopy> dlse;
  if (options.lse != nullptr) {
    dlse = std::make_unique<DeviceCopy>(*options.lse);
    lse_device = dlse->device;
    o.lse = &lse_device;
  }
  Status s = hattn::attention(dq.device, dk.device, dv.device, dout.device, o, chosen);
  if (g_stream != nullptr) {
    EXPECT_EQ(driver().cuStreamSynchronize(g_stream), 0);
  } else {
    EXPECT_EQ(driver().cuCtxSynchronize(), 0);
  }
  dout.copy_back();
  if (dlse) dlse->copy_back();
  return s;
}

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!hattn::cuda_available(&why)) {
      std::cout << "[  SKIP    ] no usable CUDA device: " << why << std::endl;
      GTEST_SKIP() << "no usable CUDA device: " << why;
    }
    if (!driver().error.empty()) GTEST_SKIP() << "test driver: " << driver().error;
    set_attention_runner(run_on_device);
  }
  void TearDown() override { set_attention_runner(nullptr); }

  void Check(DenseCase c) {
    TestRng rng(c.name);
    SCOPED_TRACE(rng.description());
    DenseProblem p = make_problem(c, rng);
    Dispatch d;
    std::string failure = run_and_check(p, &d);
    EXPECT_TRUE(failure.empty()) << failure;
    EXPECT_NE(d.kernel.find("_cuda"), std::string::npos) << "ran " << d.kernel;
  }
};

std::vector<DenseCase> cuda_cases() {
  std::vector<DenseCase> v;
  v.push_back(make_case("prefill_d64", {2, 4, 4, 200, 200, 64}, false));
  v.push_back(make_case("prefill_causal_d128", {1, 4, 4, 130, 130, 128}, true));
  v.push_back(make_case("prefill_gqa_lq_lt_lk_d64", {1, 8, 2, 40, 300, 64}, true));
  v.push_back(make_case("prefill_causal_lq_gt_lk_d64", {1, 2, 2, 100, 40, 64}, true));
  v.push_back(make_case("prefill_generic_d80", {1, 3, 1, 70, 90, 80}, false));
  v.push_back(make_case("decode_lq1_d128", {2, 8, 8, 1, 3000, 128}, false));
  v.push_back(make_case("decode_lq3_causal_gqa_d64", {1, 8, 2, 3, 1000, 64}, true));
  v.push_back(make_case("decode_generic_d96", {1, 4, 4, 1, 700, 96}, false));
  DenseCase c = make_case("prefill_strided_d64", {2, 3, 3, 50, 60, 64}, false);
  c.q_layout = Layout::kPadded;
  c.k_layout = Layout::kBLHD;
  c.v_layout = Layout::kHBLD;
  c.out_layout = Layout::kPadded;
  c.lse_layout = Layout::kPadded;
  v.push_back(c);
  c = make_case("prefill_no_lse_d128", {1, 2, 2, 64, 64, 128}, false);
  c.with_lse = false;
  v.push_back(c);
  c = make_case("decode_forced_splits_d128", {1, 4, 4, 1, 4096, 128}, false);
  c.decode_splits = 7;
  v.push_back(c);
  return v;
}

TEST_F(Cuda, MatchesReference) {
  for (const DenseCase& c : cuda_cases()) Check(c);
}

TEST_F(Cuda, CallersStream) {
  ASSERT_EQ(driver().cuStreamCreate(&g_stream, 0), 0);
  Check(make_case("stream_prefill_d64", {1, 4, 4, 100, 100, 64}, true));
  Check(make_case("stream_decode_d128", {1, 4, 4, 1, 2000, 128}, false));
  driver().cuStreamDestroy(g_stream);
  g_stream = nullptr;
}

// 16-bit tensors (bf16, f16), and fp32 q and out over a 16-bit cache in decode (bf16kv, f16kv):
// the float64 reference on the rounded inputs, within the CPU kernels' stated tolerance
// (test_support.h, sixteen_bit_tolerance), every 16-bit CUDA kernel on some shape.
TEST_F(Cuda, SixteenBitMatchesReference) {
  struct Shape16 {
    const char* name;
    AttnShape shape;
  };
  const Shape16 shapes[] = {{"prefill_d64_gqa", {1, 4, 2, 70, 70, 64}},
                            {"prefill_d128_lq_lt_lk", {2, 2, 1, 40, 100, 128}},
                            {"prefill_d80", {1, 2, 2, 33, 33, 80}},
                            {"decode_d128_gqa", {1, 8, 2, 1, 1500, 128}},
                            {"decode_d64_lq3", {1, 2, 2, 3, 40, 64}},
                            {"decode_d80", {1, 2, 1, 1, 50, 80}},
                            {"lq_gt_lk_d64", {1, 2, 2, 12, 5, 64}}};
  std::set<std::string> used;
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    for (bool fp32_query : {false, true}) {
      for (const Shape16& sh : shapes) {
        if (fp32_query && sh.shape.lq > 8) {
          continue;  // the kv kernels are decode's
        }
        for (bool causal : {false, true}) {
          const std::string name = std::string(hattn::to_string(t)) + (fp32_query ? "kv_" : "_") +
                                   sh.name + (causal ? "_causal" : "");
          SCOPED_TRACE(name);
          TestRng rng(name);
          SCOPED_TRACE(rng.description());
          Dispatch d;
          EXPECT_EQ(check_16bit_attention(t, sh.shape, causal, true, fp32_query, rng, &d), "");
          EXPECT_NE(d.kernel.find("_cuda"), std::string::npos) << "ran " << d.kernel;
          used.insert(d.kernel);
        }
      }
    }
  }
  for (const char* dtype : {"bf16", "f16", "bf16kv", "f16kv"}) {
    const std::vector<std::string> names = cuda_kernel_names(dtype);
    EXPECT_FALSE(names.empty()) << "no " << dtype << " CUDA kernels";
    for (const std::string& name : names) {
      EXPECT_EQ(used.count(name), 1u) << name << " never ran";
    }
  }
}

// Every fp32 CUDA kernel, forced, on a shape it takes.
TEST_F(Cuda, EveryKernelForced) {
  for (const std::string& name : cuda_kernel_names()) {
    const hattn::KernelInfo* k = find_kernel(name);
    ASSERT_NE(k, nullptr);
    const int64_t d = k->head_dim ? k->head_dim : 48;
    const int64_t lq = k->phase == "decode" ? 2 : 77;
    DenseCase c = make_case("forced_" + name, {1, 2, 1, lq, 333, d}, k->causal);
    c.kernel = name;
    Check(c);
  }
}

}  // namespace
