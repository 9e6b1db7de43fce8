// The C interface (hattn_c.h): converts its plain structs to TensorViews and calls attention().
#include <cstring>
#include <string>

#include "hattn/hattn.h"
#include "hattn/hattn_c.h"

namespace {

void write_message(const std::string& text, char* message, size_t message_len) {
  if (message == nullptr || message_len == 0) return;
  const size_t n = std::min(text.size(), message_len - 1);
  std::memcpy(message, text.data(), n);
  message[n] = '\0';
}

bool to_view(const hattn_tensor* t, const char* name, hattn::TensorView* view, std::string* err) {
  if (t == nullptr) {
    *err = std::string(name) + " is NULL";
    return false;
  }
  if (t->rank < 1 || t->rank > 4) {
    *err = std::string(name) + " has rank " + std::to_string(t->rank) + " (1..4 allowed)";
    return false;
  }
  if (t->device != HATTN_DEVICE_CPU && t->device != HATTN_DEVICE_CUDA) {
    *err = std::string(name) + " has unknown device " + std::to_string(t->device);
    return false;
  }
  if (t->dtype != HATTN_DTYPE_F32 && t->dtype != HATTN_DTYPE_BF16 && t->dtype != HATTN_DTYPE_F16) {
    *err = std::string(name) + " has unknown dtype " + std::to_string(t->dtype) +
           " (HATTN_DTYPE_F32, _BF16, _F16)";
    return false;
  }
  view->data = t->data;
  view->dtype = t->dtype == HATTN_DTYPE_BF16  ? hattn::DType::bf16
                : t->dtype == HATTN_DTYPE_F16 ? hattn::DType::f16
                                              : hattn::DType::f32;
  view->device = t->device == HATTN_DEVICE_CUDA ? hattn::Device::cuda : hattn::Device::cpu;
  view->rank = t->rank;
  for (int i = 0; i < 4; ++i) {
    view->shape[i] = i < t->rank ? t->shape[i] : 0;
    view->strides[i] = i < t->rank ? t->strides[i] : 0;
  }
  return true;
}

}  // namespace

extern "C" int hattn_dense_attention(const hattn_tensor* q, const hattn_tensor* k,
                                     const hattn_tensor* v, const hattn_tensor* out,
                                     const hattn_tensor* lse, int causal, float scale,
                                     void* cuda_stream, char* message, size_t message_len) {
  hattn::TensorView qv, kv, vv, ov, lv;
  std::string err;
  if (!to_view(q, "q", &qv, &err) || !to_view(k, "k", &kv, &err) || !to_view(v, "v", &vv, &err) ||
      !to_view(out, "out", &ov, &err) || (lse != nullptr && !to_view(lse, "lse", &lv, &err))) {
    write_message(err, message, message_len);
    return static_cast<int>(hattn::StatusCode::invalid_argument);
  }
  hattn::AttentionOptions o;
  o.causal = causal != 0;
  if (scale > 0.f) {
    o.has_scale = true;
    o.scale = scale;
  }
  o.lse = lse != nullptr ? &lv : nullptr;
  o.cuda_stream = cuda_stream;
  hattn::Dispatch d;
  hattn::Status s = hattn::attention(qv, kv, vv, ov, o, &d);
  write_message(s.ok() ? d.kernel : s.message, message, message_len);
  return static_cast<int>(s.code);
}

extern "C" int hattn_cuda_available(char* message, size_t message_len) {
  std::string why;
  const bool ok = hattn::cuda_available(&why);
  write_message(why, message, message_len);
  return ok ? 1 : 0;
}
