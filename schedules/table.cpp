#include "table.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace hattn {
namespace {

bool field_matches(const std::string& pattern, const std::string& value) {
  return pattern == "any" || pattern == value;
}

int parse_int(const std::string& text, const std::string& where) {
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) {
    throw std::runtime_error(where + ": '" + text + "' is not an integer");
  }
  return v;
}

void parse_assignment(const std::string& item, const std::string& where,
                      std::map<std::string, int>* out) {
  size_t eq = item.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw std::runtime_error(where + ": expected name=value, got '" + item + "'");
  }
  (*out)[item.substr(0, eq)] = parse_int(item.substr(eq + 1), where);
}

}  // namespace

std::string TableKey::str() const {
  return variant + "." + dtype + " " + phase + " " + head_dim + " " + mask;
}

int Tunables::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    throw std::runtime_error(source_ + ": no tunable '" + name + "'");
  }
  return it->second;
}

int Tunables::get_or(const std::string& name, int fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string Tunables::str() const {
  std::string s;
  for (const auto& [k, v] : values_) s += (s.empty() ? "" : " ") + k + "=" + std::to_string(v);
  return s;
}

namespace {

// The tunables of the first line of `path` matching `key`, or false when none does.
bool find_in_table(const std::string& path, const TableKey& key, Tunables* out) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open schedule table '" + path + "'");
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    if (w.empty()) continue;
    std::string where = path + ":" + std::to_string(n);
    if (w.size() < 4) throw std::runtime_error(where + ": expected 4 key fields and tunables");
    const bool variant = w[0] == key.variant || w[0] == key.variant + "." + key.dtype;
    if (!variant || !field_matches(w[1], key.phase) || !field_matches(w[2], key.head_dim) ||
        !field_matches(w[3], key.mask)) {
      continue;
    }
    std::map<std::string, int> values;
    for (size_t j = 4; j < w.size(); ++j) parse_assignment(w[j], where, &values);
    *out = Tunables(where, std::move(values));
    return true;
  }
  return false;
}

}  // namespace

Tunables lookup_tunables(const std::vector<std::string>& paths, const TableKey& key) {
  Tunables t;
  for (const std::string& path : paths) {
    if (find_in_table(path, key, &t)) return t;
  }
  std::string files;
  for (const std::string& path : paths) files += (files.empty() ? "" : ", ") + path;
  throw std::runtime_error(files + ": no line matches '" + key.str() + "'");
}

void apply_overrides(Tunables* t, const std::string& overrides) {
  std::stringstream ss(overrides);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) continue;
    std::replace(item.begin(), item.end(), ':', '=');
    std::map<std::string, int> one;
    parse_assignment(item, "override", &one);
    for (const auto& [k, v] : one) t->set(k, v);
  }
}

}  // namespace hattn
