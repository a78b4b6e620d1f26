// Fused LSTM and GRU layers for the CPU: `rnnbench train --task mnist --arch gru --impl fused`.
//
// The same forward and hand-written backward as benchmark/loop.py's _LSTMLayer and _GRULayer (read those
// first: same equations, same saved tensors, same gradient formulas), with each step's gate arithmetic done
// in one pass over the batch instead of some ten ATen ops. ATen runs every elementwise op as its own
// parallel loop, so a step of a small cell (batch 500 x hidden 128) pays ten thread barriers and ten trips
// through memory; here it pays one of each. Matrix products stay with ATen (MKL).
//
// sigmoid and tanh use the SLEEF kernels that ATen's own vectorised sigmoid/tanh call (exported by
// libtorch_cpu), so the numbers match nn.LSTM / nn.GRU to float rounding. Float32, contiguous, CPU only;
// benchmark/fused.py checks all of that before calling in.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
extern "C" {
__m256 Sleef_expf8_u10(__m256);
__m256 Sleef_tanhf8_u10(__m256);
}
#endif

namespace {

constexpr int64_t kGrainRows = 8;

// In place over n contiguous floats.
void sigmoid_inplace(float* x, int64_t n) {
  int64_t j = 0;
#ifdef __AVX2__
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    __m256 e = Sleef_expf8_u10(_mm256_xor_ps(v, sign));
    _mm256_storeu_ps(x + j, _mm256_div_ps(one, _mm256_add_ps(one, e)));
  }
#endif
  for (; j < n; ++j) x[j] = 1.0f / (1.0f + std::exp(-x[j]));
}

void tanh_to(float* out, const float* x, int64_t n) {
  int64_t j = 0;
#ifdef __AVX2__
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(out + j, Sleef_tanhf8_u10(_mm256_loadu_ps(x + j)));
#endif
  for (; j < n; ++j) out[j] = std::tanh(x[j]);
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
}

// gates_x [T, B, G*H] against w_hh [G*H, H] (and b_hn [H] for the GRU).
void check_shapes(const at::Tensor& gates_x, const at::Tensor& w_hh, int64_t gates) {
  TORCH_CHECK(gates_x.dim() == 3 && w_hh.dim() == 2 && gates_x.size(2) == w_hh.size(0) &&
                  w_hh.size(0) == gates * w_hh.size(1) && w_hh.scalar_type() == at::kFloat,
              "gates_x [T, B, ", gates, "H] and float32 w_hh [", gates, "H, H] expected, got ", gates_x.sizes(), " and ",
              w_hh.sizes());
}

// Rows whose sequence has ended keep their state. running: mask [T, B] (nullptr when every row runs).
bool row_runs(const bool* running, int64_t batch, int64_t t, int64_t b, int64_t first_partial) {
  return running == nullptr || t < first_partial || running[t * batch + b];
}

const bool* running_rows(const c10::optional<at::Tensor>& mask, int64_t steps, int64_t batch) {
  if (!mask.has_value()) return nullptr;
  TORCH_CHECK(mask->scalar_type() == at::kBool && mask->is_contiguous() && mask->numel() == steps * batch,
              "mask must be a contiguous bool tensor [T, B]");
  return mask->data_ptr<bool>();
}

// One row of the LSTM backward at a running step. Separate __restrict__ parameters, so GCC vectorises the loop
// (it does not when the same pointers are derived inside the caller's loop).
void lstm_backward_row(const float* __restrict__ i, const float* __restrict__ f, const float* __restrict__ g,
                       const float* __restrict__ o, const float* __restrict__ tc, const float* __restrict__ cp,
                       const float* __restrict__ dhi, float* __restrict__ di, float* __restrict__ df,
                       float* __restrict__ dg, float* __restrict__ d_o, float* __restrict__ dh,
                       float* __restrict__ dc, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const float h_grad = dh[j] + dhi[j];
    const float c_grad = dc[j] + h_grad * o[j] * (1.0f - tc[j] * tc[j]);
    d_o[j] = h_grad * tc[j] * o[j] * (1.0f - o[j]);
    di[j] = c_grad * g[j] * i[j] * (1.0f - i[j]);
    df[j] = c_grad * cp[j] * f[j] * (1.0f - f[j]);
    dg[j] = c_grad * i[j] * (1.0f - g[j] * g[j]);
    dc[j] = c_grad * f[j];
    dh[j] = 0.0f;  // running rows: dh is d_gates[t] W_hh alone
  }
}

// One row of the GRU backward at a running step; d_r, d_z, d_n go to d_gates, and again (d_n times r) to d_hh.
void gru_backward_row(const float* __restrict__ r, const float* __restrict__ z, const float* __restrict__ n,
                      const float* __restrict__ hn, const float* __restrict__ hp, const float* __restrict__ dhi,
                      float* __restrict__ dg_r, float* __restrict__ dg_z, float* __restrict__ dg_n,
                      float* __restrict__ dhh_r, float* __restrict__ dhh_z, float* __restrict__ dhh_n,
                      float* __restrict__ dh, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const float h_grad = dh[j] + dhi[j];
    const float dh_z = h_grad * z[j];
    const float dn = (h_grad - dh_z) * (1.0f - n[j] * n[j]);
    const float dr = dn * hn[j] * r[j] * (1.0f - r[j]);
    const float dz = h_grad * (hp[j] - n[j]) * z[j] * (1.0f - z[j]);
    dg_r[j] = dhh_r[j] = dr;
    dg_z[j] = dhh_z[j] = dz;
    dg_n[j] = dn;
    dhh_n[j] = dn * r[j];
    dh[j] = dh_z;  // the direct path h' = ... + z ⊙ h; the matrix product is added by the caller
  }
}

}  // namespace

// gates_x [T, B, 4H] (x W_ih^T + b_ih + b_hh) -> hs, cs, tanh(cs) [T, B, H], acts [T, B, 4H] (i, f, g, o).
std::vector<at::Tensor> lstm_forward(const at::Tensor& gates_x, const at::Tensor& w_hh,
                                     const c10::optional<at::Tensor>& mask, int64_t first_partial) {
  check(gates_x, "gates_x");
  check_shapes(gates_x, w_hh, 4);
  const int64_t steps = gates_x.size(0), batch = gates_x.size(1), hidden = gates_x.size(2) / 4;
  const bool* running = running_rows(mask, steps, batch);
  auto acts = at::empty_like(gates_x);
  auto hs = gates_x.new_empty({steps, batch, hidden});
  auto cs = at::empty_like(hs);
  auto tanh_cs = at::empty_like(hs);
  auto zeros = gates_x.new_zeros({batch, hidden});
  const auto w_t = w_hh.t();
  for (int64_t t = 0; t < steps; ++t) {
    auto step_acts = acts[t];
    if (t) {
      at::mm_out(step_acts, hs[t - 1], w_t);  // h W_hh^T alone: addmm would first copy gates_x[t] into place
    } else {
      step_acts.zero_();
    }
    float* a = step_acts.data_ptr<float>();
    const float* gx_all = gates_x[t].data_ptr<float>();
    float* c_out = cs[t].data_ptr<float>();
    float* tc_out = tanh_cs[t].data_ptr<float>();
    float* h_out = hs[t].data_ptr<float>();
    const float* c_prev = t ? cs[t - 1].data_ptr<float>() : zeros.data_ptr<float>();
    const float* h_prev = t ? hs[t - 1].data_ptr<float>() : zeros.data_ptr<float>();
    at::parallel_for(0, batch, kGrainRows, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        float* __restrict__ row = a + b * 4 * hidden;
        const float* __restrict__ gx = gx_all + b * 4 * hidden;
        for (int64_t j = 0; j < 4 * hidden; ++j) row[j] += gx[j];
        sigmoid_inplace(row, 2 * hidden);
        tanh_to(row + 2 * hidden, row + 2 * hidden, hidden);
        sigmoid_inplace(row + 3 * hidden, hidden);
        const float *__restrict__ i = row, *__restrict__ f = row + hidden, *__restrict__ g = row + 2 * hidden;
        const float* __restrict__ cp = c_prev + b * hidden;
        float* __restrict__ c = c_out + b * hidden;
        const bool runs = row_runs(running, batch, t, b, first_partial);
        for (int64_t j = 0; j < hidden; ++j) c[j] = runs ? f[j] * cp[j] + i[j] * g[j] : cp[j];
        tanh_to(tc_out + b * hidden, c, hidden);
        const float *__restrict__ o = row + 3 * hidden, *__restrict__ tc = tc_out + b * hidden;
        const float* __restrict__ hp = h_prev + b * hidden;
        float* __restrict__ h = h_out + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) h[j] = runs ? o[j] * tc[j] : hp[j];
      }
    });
  }
  return {hs, cs, tanh_cs, acts};
}

// -> d_gates [T, B, 4H] (the gradient of gates_x), d_w_hh [4H, H].
std::vector<at::Tensor> lstm_backward(const at::Tensor& d_hs_in, const at::Tensor& acts, const at::Tensor& hs,
                                      const at::Tensor& cs, const at::Tensor& tanh_cs, const at::Tensor& w_hh,
                                      const c10::optional<at::Tensor>& mask, int64_t first_partial) {
  const at::Tensor d_hs = d_hs_in.contiguous();
  const int64_t steps = hs.size(0), batch = hs.size(1), hidden = hs.size(2);
  const bool* running = running_rows(mask, steps, batch);
  auto d_gates = at::empty_like(acts);
  auto dh = hs.new_zeros({batch, hidden});  // from the step after: d_gates[t+1] W_hh (+ held rows)
  auto dc = hs.new_zeros({batch, hidden});
  auto zeros = hs.new_zeros({batch, hidden});
  for (int64_t t = steps - 1; t >= 0; --t) {
    const float* a = acts[t].data_ptr<float>();
    const float* tc_all = tanh_cs[t].data_ptr<float>();
    const float* cp_all = t ? cs[t - 1].data_ptr<float>() : zeros.data_ptr<float>();  // c_0 = 0
    const float* dh_in = d_hs[t].data_ptr<float>();
    float* dg_all = d_gates[t].data_ptr<float>();
    float* dh_all = dh.data_ptr<float>();
    float* dc_all = dc.data_ptr<float>();
    at::parallel_for(0, batch, kGrainRows, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const float* __restrict__ row = a + b * 4 * hidden;
        const float *__restrict__ i = row, *__restrict__ f = row + hidden;
        const float *__restrict__ g = row + 2 * hidden, *__restrict__ o = row + 3 * hidden;
        const float* __restrict__ tc = tc_all + b * hidden;
        float* __restrict__ dg = dg_all + b * 4 * hidden;
        float* __restrict__ dhb = dh_all + b * hidden;
        float* __restrict__ dcb = dc_all + b * hidden;
        const float* __restrict__ dhi = dh_in + b * hidden;
        if (!row_runs(running, batch, t, b, first_partial)) {  // held: the state's gradient passes straight through
          for (int64_t j = 0; j < hidden; ++j) dhb[j] += dhi[j];
          std::fill(dg, dg + 4 * hidden, 0.0f);
          continue;
        }
        lstm_backward_row(i, f, g, o, tc, cp_all + b * hidden, dhi, dg, dg + hidden, dg + 2 * hidden,
                          dg + 3 * hidden, dhb, dcb, hidden);
      }
    });
    if (t) dh.addmm_(d_gates[t], w_hh);
  }
  auto d_w = hs.new_zeros({4 * hidden, hidden});
  if (steps > 1) {  // h_0 = 0 adds nothing to W_hh's gradient, so step 0 is left out
    at::mm_out(d_w, d_gates.slice(0, 1).reshape({-1, 4 * hidden}).t(),
               hs.slice(0, 0, steps - 1).reshape({-1, hidden}));
  }
  return {d_gates, d_w};
}

// gates_x [T, B, 3H] (x W_ih^T + b_ih + b_hh's r and z parts), b_hn [H]
// -> hs [T, B, H], acts [T, B, 3H] (r, z, n), hidden_n [T, B, H] (h W_hn^T + b_hn).
// One GEMM per step, h W_hh^T for all three gates, into a contiguous scratch (no copy of gates_x first).
std::vector<at::Tensor> gru_forward(const at::Tensor& gates_x, const at::Tensor& w_hh, const at::Tensor& b_hn,
                                    const c10::optional<at::Tensor>& mask, int64_t first_partial) {
  check(gates_x, "gates_x");
  check(b_hn, "b_hn");
  check_shapes(gates_x, w_hh, 3);
  const int64_t steps = gates_x.size(0), batch = gates_x.size(1), hidden = gates_x.size(2) / 3;
  TORCH_CHECK(b_hn.numel() == hidden, "b_hn must have ", hidden, " elements, got ", b_hn.numel());
  const bool* running = running_rows(mask, steps, batch);
  auto acts = gates_x.new_empty({steps, batch, 3 * hidden});
  auto hidden_n = gates_x.new_empty({steps, batch, hidden});
  auto hs = gates_x.new_empty({steps, batch, hidden});
  auto zeros = gates_x.new_zeros({batch, hidden});
  auto hh = gates_x.new_zeros({batch, 3 * hidden});  // h W_hh^T; zero at t = 0, where h = 0
  const auto w_t = w_hh.t();
  const float* bn = b_hn.data_ptr<float>();
  for (int64_t t = 0; t < steps; ++t) {
    if (t) at::mm_out(hh, hs[t - 1], w_t);
    const float* hh_all = hh.data_ptr<float>();
    float* a = acts[t].data_ptr<float>();
    const float* gx_all = gates_x[t].data_ptr<float>();
    float* hn_all = hidden_n[t].data_ptr<float>();
    const float* h_prev = t ? hs[t - 1].data_ptr<float>() : zeros.data_ptr<float>();
    float* h_out = hs[t].data_ptr<float>();
    at::parallel_for(0, batch, kGrainRows, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        float* __restrict__ row = a + b * 3 * hidden;
        const float* __restrict__ gx = gx_all + b * 3 * hidden;
        const float* __restrict__ hhb = hh_all + b * 3 * hidden;
        float* __restrict__ hn = hn_all + b * hidden;
        for (int64_t j = 0; j < 2 * hidden; ++j) row[j] = gx[j] + hhb[j];
        sigmoid_inplace(row, 2 * hidden);
        const float *__restrict__ r = row, *__restrict__ z = row + hidden;
        float* __restrict__ n = row + 2 * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
          hn[j] = hhb[2 * hidden + j] + bn[j];
          n[j] = gx[2 * hidden + j] + r[j] * hn[j];
        }
        tanh_to(n, n, hidden);
        const float* __restrict__ hp = h_prev + b * hidden;
        float* __restrict__ h = h_out + b * hidden;
        const bool runs = row_runs(running, batch, t, b, first_partial);
        for (int64_t j = 0; j < hidden; ++j) h[j] = runs ? n[j] + z[j] * (hp[j] - n[j]) : hp[j];
      }
    });
  }
  return {hs, acts, hidden_n};
}

// -> d_gates [T, B, 3H] (the gradient of gates_x), d_w_hh [3H, H], d_b_hn [H].
// d_hh is the gradient at h W_hh^T + [0, 0, b_hn]: r's and z's as in d_gates, n's times r. One GEMM per
// step carries it back to h, and one over all steps gives W_hh's gradient.
std::vector<at::Tensor> gru_backward(const at::Tensor& d_hs_in, const at::Tensor& acts, const at::Tensor& hidden_n,
                                     const at::Tensor& hs, const at::Tensor& w_hh,
                                     const c10::optional<at::Tensor>& mask, int64_t first_partial) {
  const at::Tensor d_hs = d_hs_in.contiguous();
  const int64_t steps = hs.size(0), batch = hs.size(1), hidden = hs.size(2);
  const bool* running = running_rows(mask, steps, batch);
  auto d_gates = at::empty_like(acts);
  auto d_hh = at::empty_like(acts);
  auto dh = hs.new_zeros({batch, hidden});
  auto zeros = hs.new_zeros({batch, hidden});
  for (int64_t t = steps - 1; t >= 0; --t) {
    const float* a = acts[t].data_ptr<float>();
    const float* hn_all = hidden_n[t].data_ptr<float>();
    const float* h_prev = t ? hs[t - 1].data_ptr<float>() : zeros.data_ptr<float>();
    const float* dh_in = d_hs[t].data_ptr<float>();
    float* dg_all = d_gates[t].data_ptr<float>();
    float* dhh_all = d_hh[t].data_ptr<float>();
    float* dh_all = dh.data_ptr<float>();
    at::parallel_for(0, batch, kGrainRows, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const float* __restrict__ row = a + b * 3 * hidden;
        const float *__restrict__ r = row, *__restrict__ z = row + hidden, *__restrict__ n = row + 2 * hidden;
        const float *__restrict__ hn = hn_all + b * hidden, *__restrict__ hp = h_prev + b * hidden;
        const float* __restrict__ dhi = dh_in + b * hidden;
        float* __restrict__ dg = dg_all + b * 3 * hidden;
        float* __restrict__ dhh = dhh_all + b * 3 * hidden;
        float* __restrict__ dhb = dh_all + b * hidden;
        if (!row_runs(running, batch, t, b, first_partial)) {
          for (int64_t j = 0; j < hidden; ++j) dhb[j] += dhi[j];
          std::fill(dg, dg + 3 * hidden, 0.0f);
          std::fill(dhh, dhh + 3 * hidden, 0.0f);
          continue;
        }
        gru_backward_row(r, z, n, hn, hp, dhi, dg, dg + hidden, dg + 2 * hidden, dhh, dhh + hidden,
                         dhh + 2 * hidden, dhb, hidden);
      }
    });
    if (t) dh.addmm_(d_hh[t], w_hh);  // at t = 0 it would be the gradient of h_0 = 0, unused
  }
  auto d_w = hs.new_zeros({3 * hidden, hidden});
  if (steps > 1) {  // h_0 = 0 adds nothing to W_hh's gradient, so step 0 is left out
    at::mm_out(d_w, d_hh.slice(0, 1).reshape({-1, 3 * hidden}).t(), hs.slice(0, 0, steps - 1).reshape({-1, hidden}));
  }
  return {d_gates, d_w, d_hh.slice(2, 2 * hidden).sum({0, 1})};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // No Python inside: other Python threads may run meanwhile.
  const auto no_gil = py::call_guard<py::gil_scoped_release>();
  m.def("lstm_forward", &lstm_forward, "fused LSTM layer, forward", no_gil);
  m.def("lstm_backward", &lstm_backward, "fused LSTM layer, backward", no_gil);
  m.def("gru_forward", &gru_forward, "fused GRU layer, forward", no_gil);
  m.def("gru_backward", &gru_backward, "fused GRU layer, backward", no_gil);
#ifdef __AVX2__
  m.attr("avx2") = true;
#else
  m.attr("avx2") = false;
#endif
}
