#include "hattn/hattn.h"

namespace hattn {

// HATTN_VERSION comes from project(hattn VERSION ...), the CMake package's version too.
const char* version() { return HATTN_VERSION; }

}  // namespace hattn
