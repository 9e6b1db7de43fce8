#include "halide_glue.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace hattn {
namespace {

std::atomic<int> g_threads{0};

void route_error(void* user_context, const char* message) {
  if (user_context == nullptr) return;  // only hattn's own calls pass a context
  std::string& e = static_cast<CallContext*>(user_context)->error;
  e += message;
  while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
}

int default_threads() {
  if (const char* env = std::getenv("HL_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

// Scratch memory. Halide frees every buffer at the end of a call; for large ones (the final
// states of a prefill call are 3x the output) glibc then returns the pages to the OS and the next
// call faults them in again, which cost ~10% at L=512. Each thread keeps a few freed blocks for
// reuse instead: up to 4 large ones, and up to 16 small ones (a decode call on a tiny cache
// allocates a dozen small buffers, and malloc and free were a quarter of its time). A header before
// each block records its size; 64-byte alignment is kept and the 64 bytes past the end are
// readable, as Halide requires.
constexpr size_t kAlign = 64;
constexpr size_t kCacheMinBytes = size_t{64} << 10;

struct ScratchPool {
  std::vector<void*> blocks;  // base pointers (header first), oldest first
  size_t limit;
};

struct ScratchCache {
  ScratchPool large{{}, 4}, small{{}, 16};
  ~ScratchCache() {
    for (ScratchPool* p : {&large, &small}) {
      for (void* b : p->blocks) std::free(b);
    }
  }
  ScratchPool& pool_for(size_t bytes) { return bytes >= kCacheMinBytes ? large : small; }
};
thread_local ScratchCache t_scratch;

// Scratch bytes handed to Halide and not yet returned, and the high-water mark (all threads).
std::atomic<size_t> g_scratch_in_use{0};
std::atomic<size_t> g_scratch_peak{0};

void count_alloc(size_t bytes) {
  const size_t now = g_scratch_in_use.fetch_add(bytes) + bytes;
  size_t peak = g_scratch_peak.load();
  while (now > peak && !g_scratch_peak.compare_exchange_weak(peak, now)) {
  }
}

size_t& header_size(void* base) { return *static_cast<size_t*>(base); }

void* scratch_malloc(void* /*user_context*/, size_t size) {
  const size_t rounded = (size + kAlign - 1) / kAlign * kAlign;
  auto& blocks = t_scratch.pool_for(rounded).blocks;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const size_t have = header_size(blocks[i]);
    if (have >= rounded && have <= 2 * rounded) {
      void* base = blocks[i];
      blocks.erase(blocks.begin() + static_cast<std::ptrdiff_t>(i));
      count_alloc(have);
      return static_cast<char*>(base) + kAlign;
    }
  }
  void* base = std::aligned_alloc(kAlign, rounded + 2 * kAlign);
  if (base == nullptr) return nullptr;
  header_size(base) = rounded;
  count_alloc(rounded);
  return static_cast<char*>(base) + kAlign;
}

void scratch_free(void* /*user_context*/, void* ptr) {
  if (ptr == nullptr) return;
  void* base = static_cast<char*>(ptr) - kAlign;
  const size_t bytes = header_size(base);
  g_scratch_in_use.fetch_sub(bytes);
  ScratchPool& pool = t_scratch.pool_for(bytes);
  auto& blocks = pool.blocks;
  if (blocks.size() == pool.limit) {
    std::free(blocks.front());
    blocks.erase(blocks.begin());
  }
  blocks.push_back(base);
}

// Halide's parallel loops: inline for a call marked serial, else Halide's thread pool.
int do_par_for(void* user_context, halide_task_t task, int min, int size, uint8_t* closure) {
  const auto* call = static_cast<const CallContext*>(user_context);
  if (call == nullptr || !call->serial) {
    return halide_default_do_par_for(user_context, task, min, size, closure);
  }
  for (int i = min; i < min + size; ++i) {
    const int rc = task(user_context, i, closure);
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

}  // namespace

void install_halide_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    halide_set_error_handler(route_error);
    halide_set_custom_do_par_for(do_par_for);
    halide_set_custom_malloc(scratch_malloc);
    halide_set_custom_free(scratch_free);
  });
}

halide_type_t halide_type_of(DType t) {
  switch (t) {
    case DType::f16:
      return halide_type_t(halide_type_float, 16, 1);
    case DType::bf16:
      return halide_type_t(halide_type_bfloat, 16, 1);
    case DType::f32:
      break;
  }
  return halide_type_t(halide_type_float, 32, 1);
}

void HalideBuffer::describe(void* data, halide_type_t type, int rank, const int64_t* shape,
                            const int64_t* strides) {
  buf_.host = static_cast<uint8_t*>(data);
  buf_.type = type;
  buf_.dimensions = rank;
  buf_.dim = dims_;
  for (int i = 0; i < rank; ++i) {
    halide_dimension_t& d = dims_[rank - 1 - i];
    d.min = 0;
    d.extent = static_cast<int32_t>(shape[i]);
    d.stride = static_cast<int32_t>(strides[i]);
    d.flags = 0;
  }
}

void HalideBuffer::dense(void* data, halide_type_t type, std::initializer_list<int64_t> shape) {
  int64_t sizes[4] = {}, strides[4] = {};
  const int rank = static_cast<int>(shape.size());
  std::copy(shape.begin(), shape.end(), sizes);
  int64_t stride = 1;
  for (int i = rank - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= sizes[i];
  }
  describe(data, type, rank, sizes, strides);
}

HalideBuffer::HalideBuffer(const TensorView& t) {
  describe(t.data, halide_type_of(t.dtype), t.rank, t.shape, t.strides);
}

HalideBuffer::HalideBuffer(int32_t* data, std::initializer_list<int64_t> shape) {
  dense(data, halide_type_t(halide_type_int, 32, 1), shape);
}

HalideBuffer::HalideBuffer(float* data, std::initializer_list<int64_t> shape) {
  dense(data, halide_type_t(halide_type_float, 32, 1), shape);
}

namespace {

// One parallel_for call: the body and the first exception a task threw.
struct ParallelClosure {
  const std::function<void(int64_t)>* body;
  std::mutex mutex;
  std::exception_ptr error;
};

int run_task(void* /*user_context*/, int i, uint8_t* closure) {
  auto* c = reinterpret_cast<ParallelClosure*>(closure);
  try {
    (*c->body)(i);
  } catch (...) {
    const std::lock_guard<std::mutex> lock(c->mutex);
    if (!c->error) c->error = std::current_exception();
  }
  return 0;  // a failed task still lets the others finish; the error is rethrown below
}

}  // namespace

void parallel_for(int64_t n, const std::function<void(int64_t)>& body) {
  if (n <= 0) return;
  // n counts (batch, head) pairs of a validated view, whose elements number below 2^31: it fits
  // Halide's int task count.
  ParallelClosure closure{&body, {}, nullptr};
  install_halide_handlers();
  halide_do_par_for(nullptr, run_task, 0, static_cast<int>(n),
                    reinterpret_cast<uint8_t*>(&closure));
  if (closure.error) std::rethrow_exception(closure.error);
}

Status kernel_failed(const std::string& kernel, int rc, const CallContext& ctx) {
  return Status{StatusCode::kernel_error,
                "kernel " + kernel + " failed (Halide error " + std::to_string(rc) +
                    "): " + (ctx.error.empty() ? "no message" : ctx.error)};
}

size_t scratch_peak_bytes() { return g_scratch_peak.load(); }
void reset_scratch_peak() { g_scratch_peak.store(g_scratch_in_use.load()); }

int worker_threads() {
  int n = g_threads.load();
  return n > 0 ? n : default_threads();
}

void set_num_threads(int n) {
  g_threads.store(n > 0 ? n : 0);
  halide_set_num_threads(n > 0 ? n : default_threads());
}

}  // namespace hattn
