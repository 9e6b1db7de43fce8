/* hattn's C interface: the same attention() behind a C ABI, for bindings (ctypes, FFI) and for
 * the GPU benchmark, which drives hattn and PyTorch from one Python process. Tensors are
 * described exactly as in hattn.h (shapes and strides in elements, outermost first). */
#ifndef HATTN_C_H
#define HATTN_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { HATTN_DEVICE_CPU = 0, HATTN_DEVICE_CUDA = 1 };
/* Element types (hattn::DType): bf16 and f16 are 16-bit words. A zero-initialized tensor is f32. */
enum { HATTN_DTYPE_F32 = 0, HATTN_DTYPE_BF16 = 1, HATTN_DTYPE_F16 = 2 };

typedef struct hattn_tensor {
  void* data;
  int32_t device; /* HATTN_DEVICE_* */
  int32_t rank;   /* 4 for q, k, v, out; 3 for lse */
  int64_t shape[4];
  int64_t strides[4];
  int32_t dtype; /* HATTN_DTYPE_*; lse is always f32 */
} hattn_tensor;

/* Runs dense attention (hattn::attention): q, k, v and out in one dtype, or fp32 q and out over
 * a bf16 or f16 k and v in decode; lse (fp32) may be NULL. scale <= 0 means 1/sqrt(D). cuda_stream
 * is a CUstream (NULL: the legacy default stream) and is ignored for CPU tensors. On return,
 * `message` (if not NULL) holds the refusal or error text, or the chosen kernel's name on
 * success, truncated to message_len. Returns 0 on success, else a hattn::StatusCode value. */
int hattn_dense_attention(const hattn_tensor* q, const hattn_tensor* k, const hattn_tensor* v,
                          const hattn_tensor* out, const hattn_tensor* lse, int causal, float scale,
                          void* cuda_stream, char* message, size_t message_len);

/* 1 if CUDA tensors can be used now; else 0, with the reason in `message`. */
int hattn_cuda_available(char* message, size_t message_len);

#ifdef __cplusplus
}
#endif

#endif /* HATTN_C_H */
