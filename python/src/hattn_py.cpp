// hattn._hattn: the C++ API on arrays, for the Python package (python/hattn/__init__.py).
//
// Every array argument is any DLPack or buffer-protocol array nanobind takes (NumPy arrays,
// PyTorch tensors) and becomes a hattn::TensorView over the same memory: no copy, the strides as
// they are (the library checks them: innermost stride 1). float32, bfloat16 and float16 map to
// hattn's dtypes; CPU memory, and CUDA memory for attention(). Each call releases the GIL while
// hattn runs and returns (code, message, kernel, reason, decode_splits): the Python layer raises
// hattn.Error (a subclass per StatusCode) on a refusal and allocates outputs that were not given.
// Index arrays (page tables, lengths, offsets, key lengths) are int32 and C-contiguous; the Python
// layer converts others.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hattn/hattn.h"
#include "hattn/loki_prep.h"

namespace nb = nanobind;

namespace {

using In = nb::ndarray<nb::ro>;  // read-only is enough for inputs
using Out = nb::ndarray<>;
using Index = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Table = nb::ndarray<const int32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// An argument the library cannot express (rank > 4, an unknown dtype or device): raised as
// hattn.InvalidArgument by the Python layer, like the library's own refusals.
struct BadArray {
  std::string message;
};

template <class A>
hattn::TensorView view_of(const A& a, const char* name) {
  hattn::TensorView t;
  if (a.ndim() > 4) {
    throw BadArray{std::string(name) + " has rank " + std::to_string(a.ndim()) +
                   "; hattn's tensors have rank 4 at most"};
  }
  const nb::dlpack::dtype d = a.dtype();
  const auto code = static_cast<nb::dlpack::dtype_code>(d.code);
  if (d.lanes != 1) throw BadArray{std::string(name) + " is a vector dtype"};
  if (code == nb::dlpack::dtype_code::Float && d.bits == 32) {
    t.dtype = hattn::DType::f32;
  } else if (code == nb::dlpack::dtype_code::Float && d.bits == 16) {
    t.dtype = hattn::DType::f16;
  } else if (code == nb::dlpack::dtype_code::Bfloat && d.bits == 16) {
    t.dtype = hattn::DType::bf16;
  } else {
    throw BadArray{std::string(name) + " has dtype code " + std::to_string(d.code) + " with " +
                   std::to_string(d.bits) +
                   " bits; hattn takes float32, bfloat16 or float16 tensors"};
  }
  if (a.device_type() == nb::device::cpu::value) {
    t.device = hattn::Device::cpu;
  } else if (a.device_type() == nb::device::cuda::value) {
    t.device = hattn::Device::cuda;
  } else {
    throw BadArray{std::string(name) + " lives on DLPack device type " +
                   std::to_string(a.device_type()) +
                   "; hattn takes CPU (and, for attention, CUDA) memory"};
  }
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.rank = static_cast<int>(a.ndim());
  for (int i = 0; i < t.rank; ++i) {
    t.shape[i] = static_cast<int64_t>(a.shape(i));
    t.strides[i] = static_cast<int64_t>(a.stride(i));
  }
  return t;
}

// The result the Python layer reads: (code, message, kernel, reason, decode_splits).
nb::tuple result(const hattn::Status& s, const hattn::Dispatch& d = {}) {
  return nb::make_tuple(static_cast<int>(s.code), s.message, d.kernel, d.reason, d.decode_splits);
}

// Runs `call` (returning a Status, writing a Dispatch) without the GIL; BadArray becomes an
// invalid_argument result before anything runs.
template <class Build>
nb::tuple run(Build&& build) {
  hattn::Dispatch chosen;
  hattn::Status s;
  try {
    auto call = build();
    nb::gil_scoped_release unlocked;
    s = call(&chosen);
  } catch (const BadArray& e) {
    s = {hattn::StatusCode::invalid_argument, e.message};
  }
  return result(s, chosen);
}

void set_scaled(hattn::ScaledOptions* o, double scale, const std::string& kernel,
                bool check_finite) {
  o->has_scale = scale != 0.0;  // 0: the variant's default; negative values reach the library
  o->scale = static_cast<float>(scale);
  o->kernel = kernel;
  o->check_finite = check_finite;
}

// The options of the attention-shaped calls (attention, paged, ragged) with their optional lse
// output. options() points lse at this object's own view, so call it on the copy that runs.
struct AttentionCall {
  hattn::AttentionOptions o;
  hattn::TensorView lse;  // rank 0: not requested
  hattn::AttentionOptions options() const {
    hattn::AttentionOptions r = o;
    if (lse.rank) r.lse = &lse;
    return r;
  }
};

AttentionCall attention_call(bool causal, double scale, const std::string& kernel,
                             bool check_finite, int splits, const std::optional<Out>& lse) {
  AttentionCall c;
  set_scaled(&c.o, scale, kernel, check_finite);
  c.o.causal = causal;
  c.o.decode_splits = splits;
  if (lse) c.lse = view_of(*lse, "lse");
  return c;
}

hattn::MhaWeights weights_of(const std::vector<std::optional<In>>& w) {
  static const char* const kNames[8] = {"wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"};
  if (w.size() != 8) throw BadArray{"weights: expected 8 entries (wq, bq, wk, bk, wv, bv, wo, bo)"};
  hattn::TensorView v[8];
  for (int i = 0; i < 8; ++i) {
    if (w[i]) v[i] = view_of(*w[i], kNames[i]);  // a missing bias: rank 0, zero
  }
  return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
}

hattn::SparsekGate gate_of(const std::string& gate) {
  if (gate == "value") return hattn::SparsekGate::value;
  if (gate == "logit") return hattn::SparsekGate::logit;
  throw BadArray{"gate must be 'value' or 'logit', got '" + gate + "'"};
}

}  // namespace

NB_MODULE(_hattn, m) {
  m.doc() = "hattn's C++ API on arrays (use the hattn package, not this module)";

  m.def("attention", [](In q, In k, In v, Out out, std::optional<Out> lse, bool causal,
                        double scale, std::string kernel, bool check_finite, int splits) {
    return run([&] {
      const AttentionCall call = attention_call(causal, scale, kernel, check_finite, splits, lse);
      const hattn::TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v"),
                              ov = view_of(out, "out");
      return
          [=](hattn::Dispatch* d) { return hattn::attention(qv, kv, vv, ov, call.options(), d); };
    });
  });

  m.def("topk_attention", [](In q, In k, In v, Out out, int64_t top, bool causal, double scale,
                             std::string kernel, bool check_finite) {
    return run([&] {
      hattn::TopkOptions o;
      set_scaled(&o, scale, kernel, check_finite);
      o.k = top;
      o.causal = causal;
      const hattn::TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v"),
                              ov = view_of(out, "out");
      return [=](hattn::Dispatch* d) { return hattn::topk_attention(qv, kv, vv, ov, o, d); };
    });
  });

  m.def("topk_ffn",
        [](In x, In w1, In w2t, Out y, int64_t top, std::string kernel, bool check_finite) {
          return run([&] {
            hattn::TopkFfnOptions o;
            o.k = top;
            o.kernel = kernel;
            o.check_finite = check_finite;
            const hattn::TensorView xv = view_of(x, "x"), a = view_of(w1, "w1"),
                                    b = view_of(w2t, "w2t"), yv = view_of(y, "y");
            return [=](hattn::Dispatch* d) { return hattn::topk_ffn(xv, a, b, yv, o, d); };
          });
        });

  // LokiOptions from the Python arguments (k_lead set at the call).
  const auto loki_options = [](int64_t rank, double rank_fraction, int64_t top, double top_fraction,
                               bool causal, double scale, bool check_basis, double basis_tolerance,
                               const std::string& kernel, bool check_finite) {
    hattn::LokiOptions o;
    set_scaled(&o, scale, kernel, check_finite);
    o.rank = rank;
    o.rank_fraction = rank_fraction;
    o.k = top;
    o.k_fraction = top_fraction;
    o.causal = causal;
    o.check_basis = check_basis;
    o.basis_tolerance = basis_tolerance;
    return o;
  };
  m.def("loki_attention", [=](In q, In k_rot, In v, In basis, Out out, int64_t rank,
                              double rank_fraction, int64_t top, double top_fraction, bool causal,
                              double scale, bool check_basis, double basis_tolerance,
                              std::optional<In> k_lead, std::string kernel, bool check_finite) {
    return run([&] {
      const hattn::LokiOptions o =
          loki_options(rank, rank_fraction, top, top_fraction, causal, scale, check_basis,
                       basis_tolerance, kernel, check_finite);
      const hattn::TensorView qv = view_of(q, "q"), kv = view_of(k_rot, "k_rot"),
                              vv = view_of(v, "v"), bv = view_of(basis, "basis"),
                              ov = view_of(out, "out");
      hattn::TensorView lead = k_lead ? view_of(*k_lead, "k_lead") : hattn::TensorView{};
      return [=](hattn::Dispatch* d) mutable {
        hattn::LokiOptions opt = o;
        if (lead.rank) opt.k_lead = &lead;
        return hattn::loki_attention(qv, kv, vv, bv, ov, opt, d);
      };
    });
  });

  m.def("loki_check_basis", [](In basis, double tolerance) {
    std::string worst;
    nb::tuple r = run([&] {
      const hattn::TensorView b = view_of(basis, "basis");
      return
          [=, &worst](hattn::Dispatch*) { return hattn::loki_check_basis(b, tolerance, &worst); };
    });
    return nb::make_tuple(r, worst);
  });

  m.def("loki_captured_variance", [](In keys, In basis, Out share) {
    return run([&] {
      const hattn::TensorView k = view_of(keys, "keys"), b = view_of(basis, "basis"),
                              s = view_of(share, "share");
      return [=](hattn::Dispatch*) { return hattn::loki_captured_variance(k, b, s); };
    });
  });

  m.attr("has_loki_prep") = static_cast<bool>(HATTN_HAS_LOKI_PREP);
#if HATTN_HAS_LOKI_PREP
  m.def("loki_calibrate", [](In keys, Out basis, Out ratio, double variance) {
    hattn::LokiCalibration info;
    nb::tuple r = run([&] {
      hattn::LokiCalibrateOptions o;
      o.variance = variance;
      const hattn::TensorView k = view_of(keys, "keys"), b = view_of(basis, "basis"),
                              v = view_of(ratio, "variance_ratio");
      return [=, &info](hattn::Dispatch*) { return hattn::loki_calibrate(k, b, v, o, &info); };
    });
    return nb::make_tuple(r, info.ranks);
  });
  m.def("loki_rotate", [](In keys, In basis, Out out) {
    return run([&] {
      const hattn::TensorView k = view_of(keys, "keys"), b = view_of(basis, "basis"),
                              o = view_of(out, "out");
      return [=](hattn::Dispatch*) { return hattn::loki_rotate(k, b, o); };
    });
  });
#endif

  const auto el_like = [](bool standard) {
    return [standard](In x, In memory, std::vector<std::optional<In>> weights, Out y, int64_t heads,
                      int64_t beam, bool causal, std::optional<Index> key_lengths, double scale,
                      std::string kernel, bool check_finite) {
      return run([&] {
        hattn::ElOptions o;
        set_scaled(&o, scale, kernel, check_finite);
        o.heads = heads;
        o.beam = beam;
        o.causal = causal;
        o.key_lengths = key_lengths ? key_lengths->data() : nullptr;
        const hattn::TensorView xv = view_of(x, "x"), mv = view_of(memory, "memory"),
                                yv = view_of(y, "y");
        const hattn::MhaWeights w = weights_of(weights);
        return [=](hattn::Dispatch* d) {
          return standard ? hattn::mha_attention(xv, mv, w, yv, o)
                          : hattn::el_attention(xv, mv, w, yv, o, d);
        };
      });
    };
  };
  m.def("el_attention", el_like(false));
  m.def("mha_attention", el_like(true));

  m.def("sparsek_scores", [](In x, In w_score, double slope, Out u) {
    return run([&] {
      const hattn::TensorView xv = view_of(x, "x"), wv = view_of(w_score, "w_score"),
                              uv = view_of(u, "u");
      return [=](hattn::Dispatch*) {
        return hattn::sparsek_scores(xv, wv, static_cast<float>(slope), uv);
      };
    });
  });
  m.def("sparsek_mask", [](In z, std::optional<std::vector<int64_t>> lengths, int64_t budget, Out p,
                           Out tau) {
    return run([&] {
      const hattn::TensorView zv = view_of(z, "z"), pv = view_of(p, "p"), tv = view_of(tau, "tau");
      return [=](hattn::Dispatch* d) {
        return hattn::sparsek_mask(zv, lengths ? &*lengths : nullptr, budget, pv, tv, d);
      };
    });
  });
  const auto sparsek_options = [](int64_t budget, int64_t window, double slope,
                                  const std::string& gate, double scale, const std::string& kernel,
                                  bool check_finite) {
    hattn::SparsekOptions o;
    set_scaled(&o, scale, kernel, check_finite);
    o.k = budget;
    o.window = window;
    o.slope = static_cast<float>(slope);
    o.gate = gate_of(gate);
    return o;
  };
  m.def("sparsek_attention",
        [=](In q, In k, In v, In x, In w_score, Out out, int64_t budget, int64_t window,
            double slope, std::string gate, double scale, std::string kernel, bool check_finite) {
          return run([&] {
            const hattn::SparsekOptions o =
                sparsek_options(budget, window, slope, gate, scale, kernel, check_finite);
            const hattn::TensorView qv = view_of(q, "q"), kv = view_of(k, "k"),
                                    vv = view_of(v, "v"), xv = view_of(x, "x"),
                                    wv = view_of(w_score, "w_score"), ov = view_of(out, "out");
            return [=](hattn::Dispatch* d) {
              return hattn::sparsek_attention(qv, kv, vv, xv, wv, ov, o, d);
            };
          });
        });
  m.def("sparsek_attention_scored", [=](In q, In k, In v, In u, Out out, int64_t budget,
                                        int64_t window, double slope, std::string gate,
                                        double scale, std::string kernel, bool check_finite) {
    return run([&] {
      const hattn::SparsekOptions o =
          sparsek_options(budget, window, slope, gate, scale, kernel, check_finite);
      const hattn::TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v"),
                              uv = view_of(u, "u"), ov = view_of(out, "out");
      return [=](hattn::Dispatch* d) {
        return hattn::sparsek_attention_scored(qv, kv, vv, uv, ov, o, d);
      };
    });
  });

  nb::class_<hattn::SparsekDecoder>(m, "SparsekDecoder")
      .def(nb::init<>())
      .def("reset",
           [=](hattn::SparsekDecoder& dec, int64_t batch, int64_t q_heads, int64_t kv_heads,
               int64_t head_dim, In w_score, int64_t budget, int64_t window, double slope,
               std::string gate, double scale, std::string kernel, bool check_finite,
               std::string dtype) {
             return run([&] {
               const hattn::SparsekOptions o =
                   sparsek_options(budget, window, slope, gate, scale, kernel, check_finite);
               const hattn::TensorView wv = view_of(w_score, "w_score");
               hattn::DType t = hattn::DType::f32;
               if (dtype == "bf16") {
                 t = hattn::DType::bf16;
               } else if (dtype == "f16") {
                 t = hattn::DType::f16;
               } else if (dtype != "f32") {
                 throw BadArray{"SparsekDecoder dtype must be f32, bf16 or f16, got '" + dtype +
                                "'"};
               }
               return [=, &dec](hattn::Dispatch*) {
                 return dec.reset(batch, q_heads, kv_heads, head_dim, wv, o, t);
               };
             });
           })
      .def("step",
           [](hattn::SparsekDecoder& dec, In q, In k, In v, In x, Out out) {
             return run([&] {
               const hattn::TensorView qv = view_of(q, "q"), kv = view_of(k, "k"),
                                       vv = view_of(v, "v"), xv = view_of(x, "x"),
                                       ov = view_of(out, "out");
               return [=, &dec](hattn::Dispatch* d) { return dec.step(qv, kv, vv, xv, ov, d); };
             });
           })
      .def("append",
           [](hattn::SparsekDecoder& dec, In k, In v, In x) {
             return run([&] {
               const hattn::TensorView kv = view_of(k, "k"), vv = view_of(v, "v"),
                                       xv = view_of(x, "x");
               return [=, &dec](hattn::Dispatch*) { return dec.append(kv, vv, xv); };
             });
           })
      .def_prop_ro("position", &hattn::SparsekDecoder::position)
      .def_prop_ro("cached_pairs", &hattn::SparsekDecoder::cached_pairs);

  const auto cache_of = [](const auto& k_pages, const auto& v_pages, const Table& table,
                           const Index& lengths) {
    hattn::PagedKvCache c;
    c.k_pages = view_of(k_pages, "k_pages");
    c.v_pages = view_of(v_pages, "v_pages");
    c.page_table = table.data();
    c.pages_per_seq = static_cast<int64_t>(table.shape(1));
    c.lengths = lengths.data();
    c.batch = static_cast<int64_t>(lengths.shape(0));
    if (static_cast<int64_t>(table.shape(0)) != c.batch) {
      throw BadArray{"page_table has " + std::to_string(table.shape(0)) + " rows for " +
                     std::to_string(c.batch) + " sequences (lengths)"};
    }
    return c;
  };
  m.def("paged_attention", [=](In q, In k_pages, In v_pages, Table page_table, Index lengths,
                               Out out, std::optional<Out> lse, bool causal, double scale,
                               std::string kernel, bool check_finite, int splits) {
    return run([&] {
      const AttentionCall call = attention_call(causal, scale, kernel, check_finite, splits, lse);
      const hattn::PagedKvCache c = cache_of(k_pages, v_pages, page_table, lengths);
      const hattn::TensorView qv = view_of(q, "q"), ov = view_of(out, "out");
      return
          [=](hattn::Dispatch* d) { return hattn::paged_attention(qv, c, ov, call.options(), d); };
    });
  });
  m.def("paged_topk_attention",
        [=](In q, In k_pages, In v_pages, Table page_table, Index lengths, Out out, int64_t top,
            bool causal, double scale, std::string kernel, bool check_finite) {
          return run([&] {
            hattn::TopkOptions o;
            set_scaled(&o, scale, kernel, check_finite);
            o.k = top;
            o.causal = causal;
            const hattn::PagedKvCache c = cache_of(k_pages, v_pages, page_table, lengths);
            const hattn::TensorView qv = view_of(q, "q"), ov = view_of(out, "out");
            return [=](hattn::Dispatch* d) { return hattn::paged_topk_attention(qv, c, ov, o, d); };
          });
        });
  m.def("paged_loki_attention",
        [=](In q, In k_pages, In v_pages, Table page_table, Index lengths, In basis, Out out,
            int64_t rank, double rank_fraction, int64_t top, double top_fraction, bool causal,
            double scale, bool check_basis, double basis_tolerance, std::optional<In> k_lead,
            std::string kernel, bool check_finite) {
          return run([&] {
            const hattn::LokiOptions o =
                loki_options(rank, rank_fraction, top, top_fraction, causal, scale, check_basis,
                             basis_tolerance, kernel, check_finite);
            const hattn::PagedKvCache c = cache_of(k_pages, v_pages, page_table, lengths);
            const hattn::TensorView qv = view_of(q, "q"), bv = view_of(basis, "basis"),
                                    ov = view_of(out, "out");
            hattn::TensorView lead = k_lead ? view_of(*k_lead, "k_lead") : hattn::TensorView{};
            return [=](hattn::Dispatch* d) mutable {
              hattn::LokiOptions opt = o;
              if (lead.rank) opt.k_lead = &lead;
              return hattn::paged_loki_attention(qv, c, bv, ov, opt, d);
            };
          });
        });
  m.def("paged_append", [=](In k, In v, Out k_pages, Out v_pages, Table page_table, Index lengths) {
    return run([&] {
      const hattn::PagedKvCache c = cache_of(k_pages, v_pages, page_table, lengths);
      const hattn::TensorView kv = view_of(k, "k"), vv = view_of(v, "v");
      return [=](hattn::Dispatch*) { return hattn::paged_append(kv, vv, c); };
    });
  });
  m.def("ragged_attention",
        [](In q, In k, In v, Out out, Index q_offsets, Index k_offsets, std::optional<Out> lse,
           bool causal, double scale, std::string kernel, bool check_finite) {
          return run([&] {
            const AttentionCall call = attention_call(causal, scale, kernel, check_finite, 0, lse);
            if (q_offsets.shape(0) != k_offsets.shape(0) || q_offsets.shape(0) < 1) {
              throw BadArray{"q_offsets and k_offsets must both hold batch + 1 >= 1 entries, got " +
                             std::to_string(q_offsets.shape(0)) + " and " +
                             std::to_string(k_offsets.shape(0))};
            }
            const int64_t batch = static_cast<int64_t>(q_offsets.shape(0)) - 1;
            const int32_t *qo = q_offsets.data(), *ko = k_offsets.data();
            const hattn::TensorView qv = view_of(q, "q"), kv = view_of(k, "k"),
                                    vv = view_of(v, "v"), ov = view_of(out, "out");
            return [=](hattn::Dispatch* d) {
              return hattn::ragged_attention(qv, kv, vv, ov, qo, ko, batch, call.options(), d);
            };
          });
        });

  m.def("list_kernels", [] {
    nb::list out;
    for (const hattn::KernelInfo& k : hattn::list_kernels()) {
      nb::dict d;
      d["name"] = k.name;
      d["variant"] = k.variant;
      d["phase"] = k.phase;
      d["causal"] = k.causal;
      d["head_dim"] = k.head_dim;
      d["dtype"] = k.dtype;
      d["family"] = k.family;
      d["target"] = k.target;
      d["selected_build"] = hattn::selected_build(k);
      out.append(d);
    }
    return out;
  });
  m.def("limit_isa", [](const std::string& level) { return result(hattn::limit_isa(level)); });
  m.def("isa_limit", &hattn::isa_limit);
  m.def("set_num_threads", &hattn::set_num_threads);
  m.def("decode_threshold", &hattn::decode_threshold);
  m.def("version", [] { return std::string(hattn::version()); });
  m.def("cuda_available", [] {
    std::string reason;
    const bool ok = hattn::cuda_available(&reason);
    return nb::make_tuple(ok, reason);
  });
}
