// .npy reading and writing: round trips on random data and every malformed-file refusal.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
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
  expect_refused("newline_key.npy",
                 npy_bytes("{'desc\nr\x01': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                           floats(6)),
                 "unexpected key 'desc\\x0ar\\x01'");
  expect_refused("control_descr.npy",
                 npy_bytes("{'descr': '<f\x1b[2J', 'fortran_order': False, 'shape': (2,), }",
                           floats(2)),
                 "dtype '<f\\x1b[2J'");
  std::string cut = npy_bytes(ok_dict, "");
  expect_refused("cut_header.npy", cut.substr(0, 30), "truncated header");
}

TEST(Npy, MissingFileAndUnwritablePath) {
  Array a;
  std::string error;
  EXPECT_FALSE(hattn::npy::read_f32(temp_path("does_not_exist.npy"), &a, &error));
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
  float x = 1.f;
  EXPECT_FALSE(hattn::npy::write_f32("/nonexistent-dir/x.npy", {1}, &x, &error));
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

}  // namespace
