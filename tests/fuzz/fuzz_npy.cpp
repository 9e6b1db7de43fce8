// libFuzzer target: the .npy reader (tools/npy.cpp) on arbitrary bytes.
//
// Beyond "no crash, no sanitizer report", every accepted file must be self-consistent: the data
// holds exactly prod(shape) elements (floats, or through the index reader int32s), and writing a
// float32 one back and reading that again gives the same shape and the same bits. A refusal must
// be one line of printable text that starts with the name (the file's bytes are quoted escaped).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "npy.h"

namespace {

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_npy finding: %s: %s\n", what, detail.c_str());
  std::abort();
}

// A refusal: one line of printable text starting with the name.
void check_refusal(const std::string& name, const std::string& error) {
  if (error.rfind(name + ": ", 0) != 0) finding("error does not start with the name", error);
  for (char c : error) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f)
      finding("error holds a control character (or is not one line)", error);
  }
}

// An accepted array holds exactly prod(shape) elements.
void check_count(const std::vector<int64_t>& shape, size_t elements) {
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) finding("accepted a negative dimension", std::to_string(d));
    count *= static_cast<uint64_t>(d);
  }
  if (count != elements) finding("data size differs from the shape's product", "");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "input.npy";
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // The index reader (int32 and int64 files) shares the header reader: the same bytes through it.
  {
    std::istringstream in(bytes);
    std::vector<int64_t> shape;
    std::vector<int32_t> values;
    std::string error;
    if (hattn::npy::read_i32(in, name, &shape, &values, &error)) {
      check_count(shape, values.size());
    } else {
      check_refusal(name, error);
    }
  }
  std::istringstream in(bytes);
  hattn::npy::Array a;
  std::string error;
  if (!hattn::npy::read_f32(in, name, &a, &error)) {
    check_refusal(name, error);
    return 0;
  }
  check_count(a.shape, a.data.size());

  std::ostringstream out;
  if (!hattn::npy::write_f32(out, name, a.shape, a.data.data(), &error)) {
    finding("could not write back an accepted array", error);
  }
  std::istringstream again(out.str());
  hattn::npy::Array b;
  if (!hattn::npy::read_f32(again, name, &b, &error)) finding("round trip refused", error);
  if (b.shape != a.shape) finding("round trip changed the shape", "");
  if (!a.data.empty() &&
      std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) != 0) {
    finding("round trip changed the data", "");
  }
  return 0;
}
