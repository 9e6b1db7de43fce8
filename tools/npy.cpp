#include "npy.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <utility>

namespace hattn::npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

// Text from the file as it may appear in an error: non-printable bytes as \xNN (so an error
// stays one line and prints no control characters), at most 40 bytes of it.
std::string printable(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < 40; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (std::isprint(c) && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  if (text.size() > 40) out += "...";
  return out;
}

// A strict parser for the header's Python dict literal:
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  explicit HeaderParser(const std::string& text) : s_(text) {}

  bool parse(std::string* descr, bool* fortran, std::vector<int64_t>* shape, std::string* why) {
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    skip_space();
    if (!eat('{')) return fail("header does not start with '{'", why);
    while (true) {
      skip_space();
      if (eat('}')) break;
      std::string key;
      if (!parse_string(&key)) return fail("expected a quoted key", why);
      skip_space();
      if (!eat(':')) return fail("expected ':' after '" + printable(key) + "'", why);
      skip_space();
      if (key == "descr") {
        if (!parse_string(descr)) return fail("'descr' is not a string", why);
        seen_descr = true;
      } else if (key == "fortran_order") {
        if (!parse_bool(fortran)) return fail("'fortran_order' is not True or False", why);
        seen_fortran = true;
      } else if (key == "shape") {
        if (!parse_shape(shape, why)) return false;
        seen_shape = true;
      } else {
        return fail("unexpected key '" + printable(key) + "'", why);
      }
      skip_space();
      if (eat('}')) break;
      if (!eat(',')) return fail("expected ',' or '}' after '" + printable(key) + "'", why);
    }
    if (!seen_descr || !seen_fortran || !seen_shape) {
      return fail("header lacks one of 'descr', 'fortran_order', 'shape'", why);
    }
    skip_space();
    if (pos_ != s_.size()) return fail("unexpected text after the header dict", why);
    return true;
  }

 private:
  static bool fail(const std::string& message, std::string* why) {
    *why = "malformed header: " + message;
    return false;
  }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool eat_word(const char* w) {
    size_t n = std::strlen(w);
    if (s_.compare(pos_, n, w) != 0) return false;
    pos_ += n;
    return true;
  }
  bool parse_string(std::string* out) {
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) return false;
    char quote = s_[pos_++];
    size_t end = s_.find(quote, pos_);
    if (end == std::string::npos) return false;
    *out = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return true;
  }
  bool parse_bool(bool* out) {
    if (eat_word("True")) {
      *out = true;
      return true;
    }
    if (eat_word("False")) {
      *out = false;
      return true;
    }
    return false;
  }
  bool parse_shape(std::vector<int64_t>* shape, std::string* why) {
    shape->clear();
    if (!eat('(')) return fail("'shape' is not a tuple", why);
    while (true) {
      skip_space();
      if (eat(')')) return true;
      if (pos_ < s_.size() && s_[pos_] == '-') return fail("negative dimension in 'shape'", why);
      if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        return fail("'shape' holds a non-integer", why);
      }
      int64_t v = 0;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) {
          return fail("dimension in 'shape' overflows", why);
        }
        v = v * 10 + (s_[pos_++] - '0');
      }
      shape->push_back(v);
      skip_space();
      if (eat(')')) return true;
      if (!eat(',')) return fail("expected ',' or ')' in 'shape'", why);
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

std::string dtype_name(const std::string& descr) {
  static const std::map<std::string, std::string> names = {
      {"f4", "float32"}, {"f8", "float64"}, {"f2", "float16"}, {"i4", "int32"},
      {"i8", "int64"},   {"u1", "uint8"},   {"i1", "int8"},    {"i2", "int16"},
      {"u4", "uint32"},  {"u8", "uint64"},  {"b1", "bool"},    {"c8", "complex64"}};
  std::string base = descr.size() > 1 ? descr.substr(1) : descr;
  auto it = names.find(base);
  return it == names.end() ? "" : " (" + it->second + ")";
}

bool fail(const std::string& path, const std::string& message, std::string* error) {
  *error = path + ": " + message;
  return false;
}

// What the preamble and header dict say: the dtype, the shape, where the data starts.
struct Header {
  std::string descr;
  bool fortran = false;
  std::vector<int64_t> shape;
  uint64_t data_offset = 0, file_size = 0;
};

// Reads the magic, version, header length and header dict of `f` (from its start), leaving the
// stream at the first data byte. The one header reader of every dtype.
bool read_header(std::istream& f, const std::string& path, Header* h, std::string* error) {
  f.seekg(0, std::ios::end);
  const std::streamoff end = f.tellg();
  if (!f || end < 0) return fail(path, "cannot determine the file size", error);
  h->file_size = static_cast<uint64_t>(end);
  f.seekg(0, std::ios::beg);

  char preamble[8];
  if (!f.read(preamble, 8) || std::memcmp(preamble, kMagic, kMagicLen) != 0) {
    return fail(path, "not a NumPy .npy file (bad magic)", error);
  }
  const int major = static_cast<unsigned char>(preamble[6]);
  uint64_t header_len = 0;
  size_t len_bytes = 0;
  if (major == 1) {
    len_bytes = 2;
  } else if (major == 2 || major == 3) {
    len_bytes = 4;
  } else {
    return fail(path, "unsupported .npy format version " + std::to_string(major), error);
  }
  unsigned char len_buf[4] = {0, 0, 0, 0};
  if (!f.read(reinterpret_cast<char*>(len_buf), static_cast<std::streamsize>(len_bytes))) {
    return fail(path, "truncated header", error);
  }
  for (size_t i = 0; i < len_bytes; ++i) header_len |= static_cast<uint64_t>(len_buf[i]) << (8 * i);
  h->data_offset = 8 + len_bytes + header_len;
  if (h->data_offset > h->file_size) return fail(path, "truncated header", error);
  std::string header(header_len, '\0');
  if (!f.read(header.data(), static_cast<std::streamsize>(header_len))) {
    return fail(path, "truncated header", error);
  }
  std::string why;
  if (!HeaderParser(header).parse(&h->descr, &h->fortran, &h->shape, &why)) {
    return fail(path, why, error);
  }
  return true;
}

// The checks every dtype shares once the dtype is known to be one the caller reads (elements of
// `elem_size` bytes): C order, a shape whose byte count fits, exactly that many data bytes.
// Sets `count` to the number of elements.
bool check_layout(const Header& h, const std::string& path, uint64_t elem_size, uint64_t* count,
                  std::string* error) {
  if (h.fortran) {
    return fail(path, "Fortran-order arrays are not supported; save with np.ascontiguousarray",
                error);
  }
  // A zero dimension makes the array empty whatever the others are: checked first, so that the
  // same shape is accepted for every element size (a float16 file read and written back as
  // float32 kept its shape only if the product's overflow check ignored the element size).
  const bool empty = std::find(h.shape.begin(), h.shape.end(), int64_t{0}) != h.shape.end();
  uint64_t n = empty ? 0 : 1;
  for (int64_t d : h.shape) {
    if (empty) {
      break;
    }
    if (n > std::numeric_limits<uint64_t>::max() / elem_size / static_cast<uint64_t>(d)) {
      return fail(path, "shape is too large", error);
    }
    n *= static_cast<uint64_t>(d);
  }
  const uint64_t want = n * elem_size, have = h.file_size - h.data_offset;
  if (have < want) {
    return fail(path,
                "truncated data: expected " + std::to_string(want) + " bytes, found " +
                    std::to_string(have),
                error);
  }
  if (have > want) {
    return fail(path, "has " + std::to_string(have - want) + " trailing bytes after the data",
                error);
  }
  *count = n;
  return true;
}

// Reads `count` elements of `elem_size` bytes (little-endian, as this host stores them) into
// `data` (already sized), from the stream's position (the data start).
bool read_data(std::istream& f, const std::string& path, void* data, uint64_t count,
               uint64_t elem_size, std::string* error) {
  if (count > 0 &&
      !f.read(static_cast<char*>(data), static_cast<std::streamsize>(count * elem_size))) {
    return fail(path, "read error", error);
  }
  return true;
}

// "[1, 3]": the index of flat element `flat` of an array of `shape` (C order).
std::string index_of(const std::vector<int64_t>& shape, uint64_t flat) {
  std::vector<uint64_t> idx(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    const auto d = static_cast<uint64_t>(shape[i]);
    idx[i] = flat % d;
    flat /= d;
  }
  std::string s = "[";
  for (size_t i = 0; i < idx.size(); ++i) s += (i ? ", " : "") + std::to_string(idx[i]);
  return s + "]";
}

bool write_array(std::ostream& f, const std::string& path, const char* descr,
                 const std::vector<int64_t>& shape, const void* data, uint64_t elem_size,
                 std::string* error) {
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  uint64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) return fail(path, "negative dimension in shape", error);
    dict +=
        std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    count *= static_cast<uint64_t>(shape[i]);
  }
  dict += "), }";
  // Pad with spaces so that the data starts at a multiple of 64 bytes, ending with '\n'.
  size_t len_bytes = 2;
  size_t total = 8 + len_bytes + dict.size() + 1;
  if (total > 65535 + 10) len_bytes = 4;
  total = 8 + len_bytes + dict.size() + 1;
  size_t padded = (total + 63) / 64 * 64;
  dict.append(padded - total, ' ');
  dict += '\n';
  const uint64_t header_len = dict.size();

  f.write(kMagic, kMagicLen);
  const char version[2] = {static_cast<char>(len_bytes == 2 ? 1 : 2), 0};
  f.write(version, 2);
  for (size_t i = 0; i < len_bytes; ++i) f.put(static_cast<char>((header_len >> (8 * i)) & 0xff));
  f.write(dict.data(), static_cast<std::streamsize>(dict.size()));
  if (count > 0) {
    f.write(static_cast<const char*>(data), static_cast<std::streamsize>(count * elem_size));
  }
  if (!f) return fail(path, "write error", error);
  return true;
}

}  // namespace

bool read_f32(const std::string& path, Array* out, std::string* error) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(path, "cannot open file for reading", error);
  return read_f32(f, path, out, error);
}

// IEEE binary16 to binary32, exactly (every half is a float): normals, subnormals, zeros,
// infinities and NaNs (payload kept).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    exp = 113;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

bool read_f32(std::istream& f, const std::string& path, Array* out, std::string* error) {
  Header h;
  if (!read_header(f, path, &h, error)) return false;
  if (h.descr == ">f4" || h.descr == ">f2") {
    return fail(path, "big-endian floats are not supported; use '<f4' or '<f2'", error);
  }
  if (h.descr != "<f4" && h.descr != "<f2") {
    return fail(path,
                "dtype '" + printable(h.descr) + "'" + dtype_name(h.descr) +
                    " is not supported; hattn reads float32 ('<f4') and float16 ('<f2')",
                error);
  }
  const bool half = h.descr == "<f2";
  uint64_t count = 0;
  if (!check_layout(h, path, half ? 2 : 4, &count, error)) return false;
  std::vector<float> data(count);
  if (half) {
    std::vector<uint16_t> bits(count);
    if (!read_data(f, path, bits.data(), count, 2, error)) return false;
    for (uint64_t i = 0; i < count; ++i) data[i] = half_to_float(bits[i]);
  } else if (!read_data(f, path, data.data(), count, 4, error)) {
    return false;
  }
  out->shape = std::move(h.shape);
  out->data = std::move(data);
  out->float16 = half;
  return true;
}

bool read_i32(const std::string& path, std::vector<int64_t>* shape, std::vector<int32_t>* data,
              std::string* error) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(path, "cannot open file for reading", error);
  return read_i32(f, path, shape, data, error);
}

bool read_i32(std::istream& f, const std::string& path, std::vector<int64_t>* shape,
              std::vector<int32_t>* data, std::string* error) {
  Header h;
  if (!read_header(f, path, &h, error)) return false;
  if (h.descr == ">i4" || h.descr == ">i8") {
    return fail(path, "big-endian integers are not supported; use '<i4'", error);
  }
  if (h.descr != "<i4" && h.descr != "<i8") {
    return fail(path,
                "dtype '" + printable(h.descr) + "'" + dtype_name(h.descr) +
                    " is not supported for indices; hattn reads int32 ('<i4') or int64 "
                    "('<i8'): save with x.astype(np.int32)",
                error);
  }
  const uint64_t elem_size = h.descr == "<i4" ? 4 : 8;
  uint64_t count = 0;
  if (!check_layout(h, path, elem_size, &count, error)) return false;
  std::vector<int32_t> values(count);
  if (elem_size == 4) {
    if (!read_data(f, path, values.data(), count, 4, error)) return false;
  } else {
    std::vector<int64_t> wide(count);
    if (!read_data(f, path, wide.data(), count, 8, error)) return false;
    for (uint64_t i = 0; i < count; ++i) {
      if (wide[i] < std::numeric_limits<int32_t>::min() ||
          wide[i] > std::numeric_limits<int32_t>::max()) {
        return fail(path,
                    "element " + index_of(h.shape, i) + " = " + std::to_string(wide[i]) +
                        " does not fit in int32",
                    error);
      }
      values[i] = static_cast<int32_t>(wide[i]);
    }
  }
  *shape = std::move(h.shape);
  *data = std::move(values);
  return true;
}

bool write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data,
               std::string* error) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return fail(path, "cannot open file for writing", error);
  return write_f32(f, path, shape, data, error);
}

bool write_f16(const std::string& path, const std::vector<int64_t>& shape, const uint16_t* bits,
               std::string* error) {
  std::ofstream f(path, std::ios::binary);
  if (!f) return fail(path, "cannot open file for writing", error);
  return write_array(f, path, "<f2", shape, bits, 2, error);
}

bool write_f32(std::ostream& f, const std::string& path, const std::vector<int64_t>& shape,
               const float* data, std::string* error) {
  return write_array(f, path, "<f4", shape, data, 4, error);
}

bool write_i32(const std::string& path, const std::vector<int64_t>& shape, const int32_t* data,
               std::string* error) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return fail(path, "cannot open file for writing", error);
  return write_array(f, path, "<i4", shape, data, 4, error);
}

}  // namespace hattn::npy
