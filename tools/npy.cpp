#include "npy.h"

#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>

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
      {"f8", "float64"}, {"f2", "float16"}, {"i4", "int32"}, {"i8", "int64"},    {"u1", "uint8"},
      {"i1", "int8"},    {"i2", "int16"},   {"b1", "bool"},  {"c8", "complex64"}};
  std::string base = descr.size() > 1 ? descr.substr(1) : descr;
  auto it = names.find(base);
  return it == names.end() ? "" : " (" + it->second + ")";
}

bool fail(const std::string& path, const std::string& message, std::string* error) {
  *error = path + ": " + message;
  return false;
}

}  // namespace

bool read_f32(const std::string& path, Array* out, std::string* error) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(path, "cannot open file for reading", error);
  return read_f32(f, path, out, error);
}

bool read_f32(std::istream& f, const std::string& path, Array* out, std::string* error) {
  f.seekg(0, std::ios::end);
  const std::streamoff end = f.tellg();
  if (!f || end < 0) return fail(path, "cannot determine the file size", error);
  const auto file_size = static_cast<uint64_t>(end);
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
  const uint64_t data_offset = 8 + len_bytes + header_len;
  if (data_offset > file_size) return fail(path, "truncated header", error);
  std::string header(header_len, '\0');
  if (!f.read(header.data(), static_cast<std::streamsize>(header_len))) {
    return fail(path, "truncated header", error);
  }

  std::string descr, why;
  bool fortran = false;
  std::vector<int64_t> shape;
  if (!HeaderParser(header).parse(&descr, &fortran, &shape, &why)) return fail(path, why, error);
  if (descr == ">f4") return fail(path, "big-endian float32 is not supported; use '<f4'", error);
  if (descr != "<f4") {
    return fail(path,
                "dtype '" + printable(descr) + "'" + dtype_name(descr) +
                    " is not supported; hattn reads float32 ('<f4')",
                error);
  }
  if (fortran) {
    return fail(path, "Fortran-order arrays are not supported; save with np.ascontiguousarray",
                error);
  }
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d != 0 && count > std::numeric_limits<uint64_t>::max() / 4 / static_cast<uint64_t>(d)) {
      return fail(path, "shape is too large", error);
    }
    count *= static_cast<uint64_t>(d);
  }
  const uint64_t want = count * 4, have = file_size - data_offset;
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
  out->shape = shape;
  out->data.resize(count);
  if (count > 0 &&
      !f.read(reinterpret_cast<char*>(out->data.data()), static_cast<std::streamsize>(want))) {
    return fail(path, "read error", error);
  }
  return true;
}

bool write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data,
               std::string* error) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return fail(path, "cannot open file for writing", error);
  return write_f32(f, path, shape, data, error);
}

bool write_f32(std::ostream& f, const std::string& path, const std::vector<int64_t>& shape,
               const float* data, std::string* error) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
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
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * 4));
  }
  if (!f) return fail(path, "write error", error);
  return true;
}

}  // namespace hattn::npy
