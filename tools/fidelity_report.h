// The report of `hattn fidelity activations`: each knob's results per query head, their summary,
// the table printed per layer, the JSON, and the recommended knob (the cheapest by bytes read that
// meets the user's targets in every head, per layer and for the whole model).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fidelity_metrics.h"

namespace hattn_cli {

// One query head's sums over the evaluated sequences.
struct HeadStats {
  ErrorSums error;
  double recall = 0, mass = 0, min_mass = 1;  // sums over the sampled rows, and the lowest mass
  int64_t rows = 0;                           // sampled rows (0: recall and mass count as 1)
};

// One knob of one variant on one layer.
struct Knob {
  std::string variant, label;  // "loki", "d_f=0.25 k_f=0.125"
  nlohmann::json value;        // the knob's parameters
  double bytes = 1;            // K/V bytes a decode step reads, as a fraction of dense's
  std::vector<HeadStats> heads;
};

struct Targets {
  double max_error = 0.05;  // the worst head's relative output error
  double min_recall = 0;    // the worst head's mean recall
};

// Over the heads: error mean and worst, worst row, recall mean and lowest head, mass mean and
// lowest row.
struct Summary {
  double mean_error = 0, worst_error = 0, worst_row = 0, mean_recall = 0, min_recall = 1;
  double mean_mass = 0, min_mass = 1;
};
Summary summarize(const Knob& k);
bool meets(const Summary& s, const Targets& t);

nlohmann::json knob_json(const Knob& k);

// One layer's table (a header, then a line per knob).
void print_knobs(const std::vector<Knob>& knobs);

// Per variant (in the order they appear), the cheapest knob meeting the targets on this layer:
// "topk k=32 (bytes 0.625, worst head error 3.1e-02); loki ...", or the closest when none does.
// `rec` receives {variant: {knob, label, bytes, met}}.
std::string recommend_layer(const std::vector<Knob>& knobs, const Targets& t, nlohmann::json* rec);
// The same for every layer at once: the cheapest knob (as labelled on the first layer) that meets
// the targets on each.
std::string recommend_model(const std::vector<std::vector<Knob>>& layers, const Targets& t,
                            nlohmann::json* rec);

// "loki basis, share of the evaluated keys' variance in the leading r axes: r=4 mean 71.2% (lowest
// head 60.1%) ..." for r = round(d_f D) of each d_f; `heads` as prepare_loki writes it.
void print_loki_variance(const nlohmann::json& heads, const std::vector<double>& dfs, int64_t d);

}  // namespace hattn_cli
