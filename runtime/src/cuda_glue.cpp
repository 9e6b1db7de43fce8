#include "cuda_glue.h"

#include <dlfcn.h>

#include <mutex>

#include "halide_glue.h"
#include "hattn/kernel_registry.h"

namespace hattn {

namespace {

// Halide's CUDA entry points, from the kernel set linked into the program (null when it has no
// CUDA kernels, and then its Halide runtime has no CUDA support either).
const hattn_cuda_runtime* halide_cuda() { return hattn_registered_kernels()->cuda; }

// The few driver entry points hattn calls itself (Halide's runtime resolves its own). Declared
// here so that building hattn needs no CUDA toolkit.
using CUresult = int;
using CUdevice = int;
using CUcontext = void*;
struct Driver {
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDeviceGetCount)(int*) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*cuCtxGetCurrent)(CUcontext*) = nullptr;
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
  CUcontext primary = nullptr;  // device 0's primary context, retained once
  std::string error;            // why CUDA is unusable ("" = ready)
};

template <typename F>
bool load(void* lib, const char* name, F* fn, std::string* error) {
  *fn = reinterpret_cast<F>(dlsym(lib, name));
  if (*fn == nullptr) *error = std::string("the CUDA driver has no symbol ") + name;
  return *fn != nullptr;
}

Driver& driver() {
  static Driver d;
  static std::once_flag once;
  std::call_once(once, [] {
    // RTLD_GLOBAL: Halide's CUDA runtime looks its symbols up in the process first, so a machine
    // with only the versioned libcuda.so.1 (no driver development files) works too.
    void* lib = nullptr;
    for (const char* name : {"libcuda.so.1", "libcuda.so"}) {
      lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
      if (lib != nullptr) break;
    }
    if (lib == nullptr) {
      d.error = "no CUDA driver: neither libcuda.so.1 nor libcuda.so could be loaded";
      return;
    }
    if (!load(lib, "cuInit", &d.cuInit, &d.error) ||
        !load(lib, "cuDeviceGetCount", &d.cuDeviceGetCount, &d.error) ||
        !load(lib, "cuDeviceGet", &d.cuDeviceGet, &d.error) ||
        !load(lib, "cuCtxGetCurrent", &d.cuCtxGetCurrent, &d.error) ||
        !load(lib, "cuDevicePrimaryCtxRetain", &d.cuDevicePrimaryCtxRetain, &d.error)) {
      return;
    }
    int count = 0;
    CUresult rc = d.cuInit(0);
    if (rc != 0) {
      d.error = "the CUDA driver failed to initialize (cuInit error " + std::to_string(rc) +
                "): no usable CUDA device";
      return;
    }
    if (d.cuDeviceGetCount(&count) != 0 || count < 1) {
      d.error = "the CUDA driver reports no device";
      return;
    }
    CUdevice dev = 0;
    if (d.cuDeviceGet(&dev, 0) != 0 || d.cuDevicePrimaryCtxRetain(&d.primary, dev) != 0) {
      d.error = "could not retain device 0's primary CUDA context";
    }
  });
  return d;
}

int acquire_context(void* user_context, void** ctx, bool /*create*/) {
  const auto* call = static_cast<const CallContext*>(user_context);
  if (call != nullptr && call->cuda_context != nullptr) {
    *ctx = call->cuda_context;
    return 0;
  }
  Driver& d = driver();
  if (!d.error.empty()) return -1;
  CUcontext current = nullptr;
  if (d.cuCtxGetCurrent(&current) == 0 && current != nullptr) {
    *ctx = current;
  } else {
    *ctx = d.primary;
  }
  return 0;
}

int release_context(void* /*user_context*/) { return 0; }

int get_stream(void* user_context, void* /*ctx*/, void** stream) {
  const auto* call = static_cast<const CallContext*>(user_context);
  *stream = call != nullptr ? call->cuda_stream : nullptr;
  return 0;
}

}  // namespace

bool cuda_available(std::string* reason) { return cuda_ready(reason); }

bool cuda_ready(std::string* why) {
  if (halide_cuda() == nullptr) {
    if (why != nullptr) {
      *why = std::string("no CUDA kernels were generated for this program (kernel set '") +
             hattn_registered_kernels()->set_name + "': " + hattn_registered_kernels()->requested +
             "; hattn's own build: -DHATTN_CUDA=ON, hattn_add_kernels(): TARGETS ... cuda)";
    }
    return false;
  }
  const Driver& d = driver();
  if (why != nullptr) *why = d.error;
  return d.error.empty();
}

void install_cuda_hooks() {
  const hattn_cuda_runtime* cuda = halide_cuda();
  if (cuda == nullptr) return;
  static std::once_flag once;
  std::call_once(once, [cuda] {
    cuda->set_acquire_context(acquire_context);
    cuda->set_release_context(release_context);
    cuda->set_get_stream(get_stream);
    // Keep device scratch (the final states) between calls instead of cuMemAlloc/cuMemFree each.
    halide_reuse_device_allocations(nullptr, true);
  });
}

const halide_device_interface_t* cuda_interface() {
  return halide_cuda() != nullptr ? halide_cuda()->device_interface() : nullptr;
}

void wrap_device_buffer(void* user_context, halide_buffer_t* buf, void* device_ptr) {
  buf->host = nullptr;
  if (halide_cuda() != nullptr) {
    halide_cuda()->wrap_device_ptr(user_context, buf, reinterpret_cast<uint64_t>(device_ptr));
  }
}

void detach_device_buffer(void* user_context, halide_buffer_t* buf) {
  if (buf->device != 0 && halide_cuda() != nullptr) {
    halide_cuda()->detach_device_ptr(user_context, buf);
  }
}

}  // namespace hattn
