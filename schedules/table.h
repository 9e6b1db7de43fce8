// Tunable tables: the numbers a schedule reads, kept in checked-in text files so a tuner (or a
// person) can change them without touching code. One file per target, e.g.
// schedules/x86/avx2.table; one line per (variant, phase, head dim, mask):
//
//   # variant  phase    head_dim  mask      tunables
//   dense      prefill  d64       any       qb=32 kb=256 tq=2 tk=6 td=8
//
// A field may be `any`. The variant may name a dtype, `dense.bf16`, to match only that dtype's
// kernels (a plain `dense` matches every dtype). The first line whose four key fields all match
// wins, so specific lines go before general ones. Comments start with '#'.
//
// A target may have a chain of tables, most specific first (x86/avx512_zen4.table, then
// x86/avx512.table): the first table with a matching line wins.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace hattn {

struct TableKey {
  std::string variant, phase, head_dim, mask;  // e.g. "dense", "prefill", "d64", "causal"
  std::string dtype = "f32";                   // the kernel's element type: f32, bf16, f16
  std::string str() const;
};

class Tunables {
 public:
  Tunables() = default;
  Tunables(std::string source, std::map<std::string, int> values)
      : source_(std::move(source)), values_(std::move(values)) {}
  // The value of a tunable; a missing one is a hard error naming the table line.
  int get(const std::string& name) const;
  // The value of `name`, or `fallback` where the line does not give it (a tunable added later,
  // whose fallback keeps the older lines' schedules as they were).
  int get_or(const std::string& name, int fallback) const;
  // Override from the command line (the tuner uses this to try candidates).
  void set(const std::string& name, int value) { values_[name] = value; }
  const std::string& source() const { return source_; }
  std::string str() const;

 private:
  std::string source_;
  std::map<std::string, int> values_;
};

// Reads the tables in `paths` in order and returns the tunables of the first line matching `key`.
// Throws std::runtime_error with the file, line and reason on a malformed table or a missing
// entry.
Tunables lookup_tunables(const std::vector<std::string>& paths, const TableKey& key);

// Applies overrides written as "name:value,name:value" (GenGen reserves '='; empty: none).
void apply_overrides(Tunables* t, const std::string& overrides);

}  // namespace hattn
