// .npy reading and writing: round trips on random data and every malformed-file refusal, for
// float32 arrays and for int32 index arrays (read from int32 or int64 files).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "npy.h"
#include "test_support.h"

namespace {

using hattn::npy::Array;

// Unique per test process (ctest runs tests in parallel processes).
std::string temp_path(const std::string& name) {
  static const std::string dir = [] {
    std::string templ = testing::TempDir() + "hattn_npy_XXXXXX";
    const char* made = mkdtemp(templ.data());
    return std::string(made ? made : testing::TempDir().c_str()) + "/";
  }();
  return dir + name;
}

// The bytes NumPy writes: magic, version, little-endian header length, dict padded with spaces
// so the data starts at a multiple of 64, then raw data.
std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  const size_t len_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  size_t total = 8 + len_bytes + header.size() + 1;
  header.append((total + 63) / 64 * 64 - total, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < len_bytes; ++i)
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string floats(size_t n) { return std::string(n * 4, '\x01'); }

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Reading `bytes` fails with an error that starts with the path and contains `phrase`.
void expect_refused(const std::string& name, const std::string& bytes, const std::string& phrase) {
  const std::string path = temp_path(name);
  write_file(path, bytes);
  Array a;
  std::string error;
  EXPECT_FALSE(hattn::npy::read_f32(path, &a, &error)) << name;
  EXPECT_EQ(error.rfind(path + ": ", 0), 0u) << error;
  EXPECT_NE(error.find(phrase), std::string::npos) << name << ": " << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << "error must be one line: " << error;
}

TEST(Npy, RoundTripRandomShapes) {
  hattn_test::TestRng rng("npy");
  const std::vector<std::vector<int64_t>> shapes = {{5},    {3, 7},       {2, 3, 4}, {1, 2, 7, 64},
                                                    {0, 3}, {2, 0, 4, 1}, {1},       {}};
  for (const auto& shape : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> data(static_cast<size_t>(n));
    for (float& x : data) x = rng.normal();
    const std::string path = temp_path("roundtrip.npy");
    std::string error;
    ASSERT_TRUE(hattn::npy::write_f32(path, shape, data.data(), &error)) << error;
    Array a;
    ASSERT_TRUE(hattn::npy::read_f32(path, &a, &error)) << error;
    EXPECT_EQ(a.shape, shape);
    ASSERT_EQ(a.data.size(), data.size());
    for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(a.data[i], data[i]) << rng.description();
  }
}

TEST(Npy, ReadsNumpyWrittenHeaders) {
  const std::string data = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                                     std::string(24, '\0'));
  ASSERT_EQ((data.size() - 24) % 64, 0u);  // the header pads the data start to 64 bytes
  write_file(temp_path("numpy1.npy"), data);
  Array a;
  std::string error;
  ASSERT_TRUE(hattn::npy::read_f32(temp_path("numpy1.npy"), &a, &error)) << error;
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  // Version 2.0, keys in another order, 1-tuple, double quotes.
  write_file(
      temp_path("numpy2.npy"),
      npy_bytes("{\"shape\": (4,), \"fortran_order\": False, \"descr\": \"<f4\"}", floats(4), 2));
  ASSERT_TRUE(hattn::npy::read_f32(temp_path("numpy2.npy"), &a, &error)) << error;
  EXPECT_EQ(a.shape, (std::vector<int64_t>{4}));
}

// float16 ('<f2') files are read exactly into float32 and written from bit patterns: every
// class of half (zeros, subnormals, normals at both ends, infinities, NaN) against the value
// computed here from the IEEE binary16 definition, and a round trip through write_f16.
TEST(Npy, Float16ReadExactlyAndWritten) {
  const std::vector<uint16_t> bits = {0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0xbc00,
                                      0x3555, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0x1234};
  auto value = [](uint16_t h) {
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    const int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return man ? std::nan("") : sign * INFINITY;
    if (exp == 0) return sign * std::ldexp(man / 1024.0, -14);
    return sign * std::ldexp(1.0 + man / 1024.0, exp - 15);
  };
  const std::string path = temp_path("half.npy");
  std::string error;
  ASSERT_TRUE(hattn::npy::write_f16(path, {2, 7}, bits.data(), &error)) << error;
  hattn::npy::Array a;
  ASSERT_TRUE(hattn::npy::read_f32(path, &a, &error)) << error;
  EXPECT_TRUE(a.float16);
  ASSERT_EQ(a.shape, (std::vector<int64_t>{2, 7}));
  ASSERT_EQ(a.data.size(), bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    const double want = value(bits[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(a.data[i])) << "bits 0x" << std::hex << bits[i];
    } else {
      EXPECT_EQ(static_cast<double>(a.data[i]), want) << "bits 0x" << std::hex << bits[i];
      EXPECT_EQ(std::signbit(a.data[i]), std::signbit(want)) << "bits 0x" << std::hex << bits[i];
    }
  }
  // What NumPy writes for np.float16: the same header but '<f2'.
  const std::string numpy_half =
      npy_bytes("{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }",
                std::string("\x00\x3c\x00\xc0", 4));
  const std::string p2 = temp_path("numpy_half.npy");
  std::ofstream(p2, std::ios::binary) << numpy_half;
  ASSERT_TRUE(hattn::npy::read_f32(p2, &a, &error)) << error;
  EXPECT_EQ(a.data, (std::vector<float>{1.f, -2.f}));
  expect_refused(
      "be_half.npy",
      npy_bytes("{'descr': '>f2', 'fortran_order': False, 'shape': (2,), }", std::string(4, '\0')),
      "big-endian");
}

TEST(Npy, RefusesMalformedFiles) {
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  expect_refused("bad_magic.npy", "NOTNUMPY" + std::string(100, ' '), "bad magic");
  expect_refused("empty.npy", "", "bad magic");
  std::string v9 = npy_bytes(ok_dict, floats(6));
  v9[6] = 9;
  expect_refused("version.npy", v9, "unsupported .npy format version 9");
  expect_refused(
      "f8.npy",
      npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", floats(12)),
      "dtype '<f8' (float64) is not supported");
  expect_refused(
      "be.npy", npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", floats(6)),
      "big-endian");
  expect_refused("fortran.npy",
                 npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", floats(6)),
                 "Fortran-order");
  expect_refused(
      "negative.npy",
      npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", floats(6)),
      "negative dimension");
  expect_refused(
      "overflow.npy",
      npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                floats(1)),
      "overflows");
  expect_refused(
      "huge.npy",
      npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
                floats(1)),
      "too large");
  expect_refused("truncated.npy", npy_bytes(ok_dict, floats(5)),
                 "truncated data: expected 24 bytes, found 20");
  expect_refused("trailing.npy", npy_bytes(ok_dict, floats(7)), "4 trailing bytes");
  expect_refused("nokey.npy", npy_bytes("{'descr': '<f4', 'shape': (2, 3), }", floats(6)),
                 "lacks one of");
  expect_refused("notdict.npy", npy_bytes("['descr']", floats(6)), "malformed header");
  expect_refused(
      "badkey.npy",
      npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", floats(6)),
      "unexpected key 'x'");
  // Found by tests/fuzz/fuzz_npy: the file's bytes quoted in an error are escaped, so that a
  // key holding a newline or control character still gives one printable line.
  expect_refused(
      "newline_key.npy",
      npy_bytes("{'desc\nr\x01': '<f4', 'fortran_order': False, 'shape': (2, 3), }", floats(6)),
      "unexpected key 'desc\\x0ar\\x01'");
  expect_refused(
      "control_descr.npy",
      npy_bytes("{'descr': '<f\x1b[2J', 'fortran_order': False, 'shape': (2,), }", floats(2)),
      "dtype '<f\\x1b[2J'");
  std::string cut = npy_bytes(ok_dict, "");
  expect_refused("cut_header.npy", cut.substr(0, 30), "truncated header");
}

// Little-endian bytes of integers (int32_t or int64_t), as NumPy writes '<i4' and '<i8'.
template <typename T>
std::string ints(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    auto u = static_cast<std::make_unsigned_t<T>>(values[i]);
    for (size_t b = 0; b < sizeof(T); ++b) out[i * sizeof(T) + b] = static_cast<char>(u >> (8 * b));
  }
  return out;
}

// Reading `bytes` as int32 indices fails with an error that starts with the path, contains
// `phrase` and is one line.
void expect_i32_refused(const std::string& name, const std::string& bytes,
                        const std::string& phrase) {
  const std::string path = temp_path(name);
  write_file(path, bytes);
  std::vector<int64_t> shape = {7};
  std::vector<int32_t> data = {7};
  std::string error;
  EXPECT_FALSE(hattn::npy::read_i32(path, &shape, &data, &error)) << name;
  EXPECT_EQ(error.rfind(path + ": ", 0), 0u) << error;
  EXPECT_NE(error.find(phrase), std::string::npos) << name << ": " << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << "error must be one line: " << error;
  // A refusal leaves the outputs as they were.
  EXPECT_EQ(shape, (std::vector<int64_t>{7})) << name;
  EXPECT_EQ(data, (std::vector<int32_t>{7})) << name;
}

// int32 files as NumPy writes them (np.save of an int32 array), in both header versions; int64
// files converted; the extremes of int32 kept exactly.
TEST(Npy, ReadsInt32AndInt64Indices) {
  hattn_test::TestRng rng("npy-i32");
  std::vector<int32_t> values = {0, -1, std::numeric_limits<int32_t>::min(),
                                 std::numeric_limits<int32_t>::max()};
  for (int i = 0; i < 8; ++i) {
    values.push_back(static_cast<int32_t>(rng.uniform_int(-(int64_t{1} << 31), (1ll << 31) - 1)));
  }
  SCOPED_TRACE(rng.description());
  std::vector<int64_t> shape;
  std::vector<int32_t> data;
  std::string error;
  write_file(
      temp_path("i4.npy"),
      npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), }", ints(values)));
  ASSERT_TRUE(hattn::npy::read_i32(temp_path("i4.npy"), &shape, &data, &error)) << error;
  EXPECT_EQ(shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(data, values);
  std::vector<int64_t> wide(values.begin(), values.end());
  write_file(
      temp_path("i8.npy"),
      npy_bytes("{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": (12,)}", ints(wide), 2));
  ASSERT_TRUE(hattn::npy::read_i32(temp_path("i8.npy"), &shape, &data, &error)) << error;
  EXPECT_EQ(shape, (std::vector<int64_t>{12}));
  EXPECT_EQ(data, values);
  // Empty and 0-d arrays.
  write_file(temp_path("i4_empty.npy"),
             npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (0,), }", ""));
  ASSERT_TRUE(hattn::npy::read_i32(temp_path("i4_empty.npy"), &shape, &data, &error)) << error;
  EXPECT_EQ(shape, (std::vector<int64_t>{0}));
  EXPECT_TRUE(data.empty());
  write_file(
      temp_path("i4_scalar.npy"),
      npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (), }", ints<int32_t>({42})));
  ASSERT_TRUE(hattn::npy::read_i32(temp_path("i4_scalar.npy"), &shape, &data, &error)) << error;
  EXPECT_TRUE(shape.empty());
  EXPECT_EQ(data, (std::vector<int32_t>{42}));
  // An empty array whose other dimensions multiply to more than a float32 file could hold (a
  // libFuzzer finding): read from float16, written as float32 and read back, the same shape.
  const std::string huge_empty = "(2, 7202, 167, 2, 2002, 2002, 20002, 20, 0)";
  const std::vector<int64_t> huge_shape = {2, 7202, 167, 2, 2002, 2002, 20002, 20, 0};
  write_file(
      temp_path("f2_empty.npy"),
      npy_bytes("{'descr': '<f2', 'fortran_order': False, 'shape': " + huge_empty + ", }", ""));
  hattn::npy::Array empty;
  ASSERT_TRUE(hattn::npy::read_f32(temp_path("f2_empty.npy"), &empty, &error)) << error;
  EXPECT_EQ(empty.shape, huge_shape);
  EXPECT_TRUE(empty.data.empty());
  ASSERT_TRUE(
      hattn::npy::write_f32(temp_path("f4_empty.npy"), empty.shape, empty.data.data(), &error))
      << error;
  hattn::npy::Array again;
  ASSERT_TRUE(hattn::npy::read_f32(temp_path("f4_empty.npy"), &again, &error)) << error;
  EXPECT_EQ(again.shape, huge_shape);
  EXPECT_TRUE(again.data.empty());
  // write_i32 writes what read_i32 (and NumPy) read: the header NumPy writes, the same values.
  ASSERT_TRUE(hattn::npy::write_i32(temp_path("w_i4.npy"), {4, 3}, values.data(), &error)) << error;
  std::ifstream f(temp_path("w_i4.npy"), std::ios::binary);
  const std::string written((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(written,
            npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (4, 3), }", ints(values)));
  ASSERT_TRUE(hattn::npy::read_i32(temp_path("w_i4.npy"), &shape, &data, &error)) << error;
  EXPECT_EQ(shape, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(data, values);
}

// The float32 reader and the index reader share the header reader: each refuses the other's
// dtype saying which it reads, and every malformed file is refused by both alike.
TEST(Npy, RefusesMalformedIndexFiles) {
  const std::string ok_dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::vector<int32_t> six = {0, 1, 2, 3, 4, 5};
  expect_i32_refused(
      "f4_as_index.npy",
      npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", floats(6)),
      "dtype '<f4' (float32) is not supported for indices; hattn reads int32 ('<i4') or int64");
  expect_i32_refused(
      "u4_as_index.npy",
      npy_bytes("{'descr': '<u4', 'fortran_order': False, 'shape': (2, 3), }", ints(six)),
      "dtype '<u4' (uint32) is not supported");
  expect_i32_refused(
      "i2_as_index.npy",
      npy_bytes("{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3), }", std::string(12, 0)),
      "dtype '<i2' (int16) is not supported");
  expect_i32_refused(
      "be_i4.npy",
      npy_bytes("{'descr': '>i4', 'fortran_order': False, 'shape': (2, 3), }", ints(six)),
      "big-endian");
  expect_i32_refused(
      "fortran_i4.npy",
      npy_bytes("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }", ints(six)),
      "Fortran-order");
  expect_i32_refused("truncated_i4.npy", npy_bytes(ok_dict, ints(six).substr(0, 22)),
                     "truncated data: expected 24 bytes, found 22");
  expect_i32_refused("trailing_i4.npy", npy_bytes(ok_dict, ints(six) + "xyz"), "3 trailing bytes");
  // int64 data is 8 bytes an element: 6 int32's worth is a truncated int64 array.
  expect_i32_refused(
      "short_i8.npy",
      npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", ints(six)),
      "truncated data: expected 48 bytes, found 24");
  expect_i32_refused(
      "huge_i8.npy",
      npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (2305843009213693952, 2), }",
                std::string(8, 0)),
      "too large");
  expect_i32_refused("bad_magic_i4.npy", "NOTNUMPY" + std::string(100, ' '), "bad magic");
  expect_i32_refused("nokey_i4.npy", npy_bytes("{'descr': '<i4', 'shape': (2, 3), }", ints(six)),
                     "lacks one of");
  // An int64 value that int32 cannot hold: refused, naming the element's index and value.
  expect_i32_refused("wide_i8.npy",
                     npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }",
                               ints<int64_t>({0, 1, 2, 3, int64_t{1} << 32, 5})),
                     "element [1, 1] = 4294967296 does not fit in int32");
  expect_i32_refused("low_i8.npy",
                     npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
                               ints<int64_t>({0, -2147483649ll, 1})),
                     "element [1] = -2147483649 does not fit in int32");
  // And the float32 reader refuses an int32 file, naming the dtype.
  expect_refused("i4_as_f32.npy", npy_bytes(ok_dict, ints(six)),
                 "dtype '<i4' (int32) is not supported; hattn reads float32 ('<f4')");
  std::vector<int64_t> shape;
  std::vector<int32_t> data;
  std::string error;
  EXPECT_FALSE(hattn::npy::read_i32(temp_path("no_such_index.npy"), &shape, &data, &error));
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

TEST(Npy, MissingFileAndUnwritablePath) {
  Array a;
  std::string error;
  EXPECT_FALSE(hattn::npy::read_f32(temp_path("does_not_exist.npy"), &a, &error));
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
  float x = 1.f;
  EXPECT_FALSE(hattn::npy::write_f32("/nonexistent-dir/x.npy", {1}, &x, &error));
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
  const int32_t i = 1;
  EXPECT_FALSE(hattn::npy::write_i32("/nonexistent-dir/x.npy", {1}, &i, &error));
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

}  // namespace
