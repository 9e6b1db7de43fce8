#include "hattn/hattn.h"

namespace hattn {

const char* to_string(StatusCode c) {
  switch (c) {
    case StatusCode::ok:
      return "ok";
    case StatusCode::invalid_argument:
      return "invalid_argument";
    case StatusCode::unsupported:
      return "unsupported";
    case StatusCode::non_finite_input:
      return "non_finite_input";
    case StatusCode::kernel_error:
      return "kernel_error";
    case StatusCode::no_device:
      return "no_device";
  }
  return "unknown";
}

}  // namespace hattn
