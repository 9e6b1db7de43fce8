#include "halide_glue.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>

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

}  // namespace

void install_halide_handlers() {
  static std::once_flag once;
  std::call_once(once, [] { halide_set_error_handler(route_error); });
}

HalideBuffer::HalideBuffer(const TensorView& t) {
  buf.host = static_cast<uint8_t*>(t.data);
  buf.type = halide_type_t(halide_type_float, 32, 1);
  buf.dimensions = t.rank;
  buf.dim = dims;
  for (int i = 0; i < t.rank; ++i) {
    halide_dimension_t& d = dims[t.rank - 1 - i];
    d.min = 0;
    d.extent = static_cast<int32_t>(t.shape[i]);
    d.stride = static_cast<int32_t>(t.strides[i]);
    d.flags = 0;
  }
}

int worker_threads() {
  int n = g_threads.load();
  return n > 0 ? n : default_threads();
}

void set_num_threads(int n) {
  g_threads.store(n > 0 ? n : 0);
  halide_set_num_threads(n > 0 ? n : default_threads());
}

}  // namespace hattn
