// Reading and writing NumPy .npy files of float32 (and float16) in C order: the CLI's file
// format; and int32 index arrays (page tables, lengths, offsets), read from int32 or int64 files.
//
// No Debian package provides an .npy reader for C++ (cnpy is not packaged), and the format is a
// short header plus raw data, so hattn reads it itself, strictly: every malformed file gets a
// one-line error that starts with the file's path, never a crash or an oversized allocation.
#pragma once

#include <cstdint>
#include <istream>
#include <ostream>
#include <string>
#include <vector>

namespace hattn::npy {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
  bool float16 = false;  // the file held float16 ('<f2'), widened exactly into `data`
};

// Reads a little-endian float32 ('<f4') or float16 ('<f2', widened exactly to float32), C-order
// array; versions 1.0, 2.0 and 3.0.
bool read_f32(const std::string& path, Array* out, std::string* error);
// The same from a stream (seekable; read from its start); `path` names it in errors. The fuzz
// target tests/fuzz/fuzz_npy.cpp drives the parser through this with in-memory bytes.
bool read_f32(std::istream& in, const std::string& path, Array* out, std::string* error);

// Reads a little-endian int32 ('<i4') or int64 ('<i8'), C-order array (as index arrays come from
// np.save) into int32, through the same header reader and checks as read_f32; an int64 element
// outside int32's range is refused, naming its index and value.
bool read_i32(const std::string& path, std::vector<int64_t>* shape, std::vector<int32_t>* data,
              std::string* error);
bool read_i32(std::istream& in, const std::string& path, std::vector<int64_t>* shape,
              std::vector<int32_t>* data, std::string* error);

// Writes version 1.0 (2.0 if the header would not fit 1.0's 16-bit length).
bool write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data,
               std::string* error);
bool write_f32(std::ostream& out, const std::string& path, const std::vector<int64_t>& shape,
               const float* data, std::string* error);
// float16 ('<f2') from raw binary16 bit patterns.
bool write_f16(const std::string& path, const std::vector<int64_t>& shape, const uint16_t* bits,
               std::string* error);
// The same for int32 ('<i4').
bool write_i32(const std::string& path, const std::vector<int64_t>& shape, const int32_t* data,
               std::string* error);

}  // namespace hattn::npy
