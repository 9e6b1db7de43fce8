#include "fidelity_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "hattn/hattn.h"

namespace hattn_cli {

namespace {

std::string sci(double x) {
  char t[32];
  std::snprintf(t, sizeof t, "%.2e", x);
  return t;
}

double mean_recall(const HeadStats& h) { return h.rows ? h.recall / h.rows : 1.0; }
double mean_mass(const HeadStats& h) { return h.rows ? h.mass / h.rows : 1.0; }

std::vector<std::string> variants_of(const std::vector<Knob>& knobs) {
  std::vector<std::string> names;
  for (const Knob& k : knobs) {
    if (std::find(names.begin(), names.end(), k.variant) == names.end()) {
      names.push_back(k.variant);
    }
  }
  return names;
}

// One variant's knobs in increasing bytes (grid order among equals).
std::vector<const Knob*> by_bytes(const std::vector<Knob>& knobs, const std::string& variant) {
  std::vector<const Knob*> mine;
  for (const Knob& k : knobs) {
    if (k.variant == variant) mine.push_back(&k);
  }
  std::stable_sort(mine.begin(), mine.end(),
                   [](const Knob* x, const Knob* y) { return x->bytes < y->bytes; });
  return mine;
}

}  // namespace

Summary summarize(const Knob& k) {
  Summary s;
  const auto n = static_cast<double>(k.heads.size());
  for (const HeadStats& h : k.heads) {
    const double rel = h.error.relative();
    s.mean_error += rel / n;
    if (!(rel <= s.worst_error)) s.worst_error = rel;  // NaN stays visible
    if (!(h.error.worst_row <= s.worst_row)) s.worst_row = h.error.worst_row;
    s.mean_recall += mean_recall(h) / n;
    s.min_recall = std::min(s.min_recall, mean_recall(h));
    s.mean_mass += mean_mass(h) / n;
    if (h.rows) s.min_mass = std::min(s.min_mass, h.min_mass);
  }
  return s;
}

bool meets(const Summary& s, const Targets& t) {
  return s.worst_error <= t.max_error && s.min_recall >= t.min_recall;
}

nlohmann::json knob_json(const Knob& k) {
  const Summary s = summarize(k);
  nlohmann::json heads = nlohmann::json::array();
  for (const HeadStats& h : k.heads) {
    heads.push_back({{"rel_error", h.error.relative()},
                     {"worst_row_error", h.error.worst_row},
                     {"recall", mean_recall(h)},
                     {"mass", mean_mass(h)},
                     {"min_mass", h.rows ? h.min_mass : 1.0}});
  }
  return {{"variant", k.variant},
          {"knob", k.value},
          {"label", k.label},
          {"bytes", k.bytes},
          {"summary",
           {{"mean_error", s.mean_error},
            {"worst_head_error", s.worst_error},
            {"worst_row_error", s.worst_row},
            {"mean_recall", s.mean_recall},
            {"min_head_recall", s.min_recall},
            {"mean_mass", s.mean_mass},
            {"min_row_mass", s.min_mass}}},
          {"heads", heads}};
}

void print_knobs(const std::vector<Knob>& knobs) {
  std::printf("%-8s %-22s %6s %11s %11s %11s %8s %8s %8s %8s\n", "variant", "knob", "bytes",
              "err mean", "err worst", "worst row", "recall", "min head", "mass", "min row");
  for (const Knob& k : knobs) {
    const Summary s = summarize(k);
    std::printf("%-8s %-22s %6.3f %11s %11s %11s %8.4f %8.4f %8.4f %8.4f\n", k.variant.c_str(),
                k.label.c_str(), k.bytes, sci(s.mean_error).c_str(), sci(s.worst_error).c_str(),
                sci(s.worst_row).c_str(), s.mean_recall, s.min_recall, s.mean_mass, s.min_mass);
  }
}

std::string recommend_layer(const std::vector<Knob>& knobs, const Targets& t, nlohmann::json* rec) {
  *rec = nlohmann::json::object();
  std::string line;
  for (const std::string& name : variants_of(knobs)) {
    const Knob* chosen = nullptr;
    const Knob* closest = nullptr;
    double closest_error = 0, error = 0;
    for (const Knob* k : by_bytes(knobs, name)) {
      const Summary s = summarize(*k);
      if (meets(s, t)) {
        chosen = k;
        error = s.worst_error;
        break;
      }
      if (closest == nullptr || s.worst_error < closest_error) {
        closest = k;
        closest_error = s.worst_error;
      }
    }
    const Knob* k = chosen != nullptr ? chosen : closest;
    char bytes[16];
    std::snprintf(bytes, sizeof bytes, "%.3f", k->bytes);
    (*rec)[name] = {
        {"knob", k->value}, {"label", k->label}, {"bytes", k->bytes}, {"met", chosen != nullptr}};
    const std::string err = sci(chosen != nullptr ? error : closest_error);
    line += (line.empty() ? "" : "; ") + name + " " +
            (chosen != nullptr
                 ? k->label + " (bytes " + bytes + ", worst head error " + err + ")"
                 : "none in the grid (closest: " + k->label + ", worst head error " + err + ")");
  }
  return line;
}

std::string recommend_model(const std::vector<std::vector<Knob>>& layers, const Targets& t,
                            nlohmann::json* rec) {
  *rec = nlohmann::json::object();
  std::string line;
  for (const std::string& name : variants_of(layers.front())) {
    const Knob* chosen = nullptr;
    for (const Knob* cand : by_bytes(layers.front(), name)) {
      bool everywhere = true;
      for (const std::vector<Knob>& layer : layers) {
        for (const Knob& k : layer) {
          if (k.variant == name && k.label == cand->label) everywhere &= meets(summarize(k), t);
        }
      }
      if (everywhere) {
        chosen = cand;
        break;
      }
    }
    (*rec)[name] =
        chosen != nullptr
            ? nlohmann::json{{"knob", chosen->value}, {"label", chosen->label}, {"met", true}}
            : nlohmann::json{{"met", false}};
    line += (line.empty() ? "" : "; ") + name + " " +
            (chosen != nullptr ? chosen->label : "none in the grid meets the targets everywhere");
  }
  return line;
}

void print_loki_variance(const nlohmann::json& heads, const std::vector<double>& dfs, int64_t d) {
  std::printf("loki basis, share of the evaluated keys' variance in the leading r axes:");
  for (double f : dfs) {
    const int64_t r = hattn::loki_count(f, d);
    double mean = 0, low = 1;
    for (const nlohmann::json& h : heads) {
      const double x = h["evaluated"][static_cast<size_t>(r - 1)].get<double>();
      mean += x / static_cast<double>(heads.size());
      low = std::min(low, x);
    }
    std::printf(" r=%lld mean %.1f%% (lowest head %.1f%%)", static_cast<long long>(r), 100 * mean,
                100 * low);
  }
  std::printf("\n");
}

}  // namespace hattn_cli
