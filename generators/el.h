// el: EL-attention (Yan et al. 2021), and the linear layer both EL and the standard multi-head
// path are built from.
//
// The algorithm only; schedules live in schedules/cpu/el_cpu.cpp. Standard multi-head attention
// projects the memory Hs [N, Dm] into per-head K_h, V_h and caches them. EL instead expands each
// (already projected and scaled) query head into model space, qt_h = Wk_h^T q_h, and attends over
// Hs itself, which every head and every beam of a sample shares:
//   e_hj = qt_h . Hs_j          (q_h . bk_h is constant in j and cancels in the softmax)
//   r_h  = sum_j softmax_j(e_h) Hs_j
//   o_h  = Wv_h r_h + bv_h      (valid because the weights sum to 1)
// The pipeline here is steps 2-6: it takes q = s * (x Wq^T + bq) and returns concat_h(o_h);
// the runtime applies the output projection with `linear`.
//
// Rows of the attention core: for sample b, row w in [0, beam * T * H) is head h = w % H of
// query u = w / H, which is token t = u % T of beam u / T, i.e. x row n = b * beam * T + u.
// All rows of a sample read the same Hs, so scores and the weighted sum are two GEMMs
// [rows, Dm] x [Dm, N] and [rows, N] x [N, Dm] per sample.
#pragma once

#include "Halide.h"

namespace hattn {

struct ElInputs {
  Halide::Func q;        // (o, t, r)  projected, scaled queries [B * beam, T, Dm]
  Halide::Func hs;       // (m, j, b)  memory [B, N, Dm]
  Halide::Func wk, wv;   // (m, o)     [Dm out, Dm in] row-major: W[o][m]
  Halide::Func bv;       // (o)
  Halide::Func lengths;  // (b)        visible keys per sample (N when not padded)
  Halide::Expr model_dim, heads, tokens, beam, memory_len;  // Dm, H, T, beam, N
  Halide::Expr x_rows;                                      // B * beam
  Halide::Expr causal;  // bool: key j visible to token t iff j <= t + (len_b - T)
};

struct ElStages {
  Halide::Var m{"m"}, o{"o"}, oo{"oo"}, h{"h"}, n{"n"}, j{"j"}, w{"w"}, b{"b"}, t{"t"}, r{"r"};
  Halide::RDom rd, rm, rj, rm2;       // over Dh, Dm, N, Dm
  Halide::Func q_rows{"q_rows"};      // (o, n)      q with (t, r) flattened to n = r * T + t
  Halide::Func qt{"qt"};              // (m, h, n)   Wk_h^T q_h: queries in model space
  Halide::Func scores{"scores"};      // (j, w, b)   qt . Hs_j
  Halide::Func masked{"masked"};      // (j, w, b)   scores, -inf where not visible
  Halide::Func row_max{"row_max"};    // (w, b)
  Halide::Func probs{"probs"};        // (j, w, b)   exp(e - max), 0 where not visible
  Halide::Func row_sum{"row_sum"};    // (w, b)
  Halide::Func mixed{"mixed"};        // (m, w, b)   sum_j probs Hs_j (unnormalised r_h)
  Halide::Func context{"context"};    // (m, w, b)   r_h = mixed / row_sum
  Halide::Func head_out{"head_out"};  // (o, h, n)   Wv_h r_h, o in [0, Dh)
  Halide::Func out{"out"};            // (oo, t, r)  concat_h(o_h) [B * beam, T, Dm]
};

ElStages el_attention(const ElInputs& in);

// y = scale * (x W^T + bias): x (i, n) [rows, in], W (i, o) [out, in] row-major, bias (o).
struct LinearInputs {
  Halide::Func x, w, bias;
  Halide::Expr in_dim, out_dim, rows, scale;
};

struct LinearStages {
  Halide::Var o{"o"}, n{"n"};
  Halide::RDom ri;          // over the input features
  Halide::Func dot{"dot"};  // (o, n)
  Halide::Func y{"y"};      // (o, n)
};

LinearStages linear_layer(const LinearInputs& in);

}  // namespace hattn
