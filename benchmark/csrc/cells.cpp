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

// A layer has D directions (1, or 2 for a bidirectional one). Direction 1 walks time backwards: at its
// processing step k it is at time T-1-k, so it reads its inputs and writes its outputs in place, with no
// reversed copy of either. The directions run one after the other, so a step's working set is one
// direction's. Rows of gates_x, its gradient and the states are direction-major (gates [D * G*H], states
// [D * H], nn.LSTM's bidirectional order); the saved activations are one tensor per direction, [T, B, G*H].
// That is no whim: glibc serves a block above 32 MB with a fresh mmap every time, and the page faults of
// touching it cost more than the step's arithmetic (43 MB: ~20 ms against ~1 ms for 21 MB at batch 500 x
// hidden 128), so per-direction blocks keep the big MNIST layers under that threshold.
struct Direction {
  int64_t d, dirs, steps, batch, hidden, gates;

  int64_t time(int64_t k) const { return d ? steps - 1 - k : k; }
  // Offsets of row b at time t: into gates_x and its gradient, into the states, into this direction's own
  // [T, B, G*H] blocks, and into a [D, B, *] per-step buffer.
  int64_t gate_at(int64_t t, int64_t b) const { return ((t * batch + b) * dirs + d) * gates * hidden; }
  int64_t state_at(int64_t t, int64_t b) const { return ((t * batch + b) * dirs + d) * hidden; }
  int64_t own_at(int64_t t, int64_t b) const { return (t * batch + b) * gates * hidden; }
  int64_t buffer_row(int64_t b) const { return d * batch + b; }
  // The state that step k starts from: the previous step's, or the zero initial state.
  const float* previous(const float* states, int64_t k, int64_t b, const float* zeros) const {
    return k ? states + state_at(time(k - 1), b) : zeros;
  }
  at::Tensor own_slice(const at::Tensor& t) const { return t.slice(-1, d * gates * hidden, (d + 1) * gates * hidden); }
  at::Tensor state_slice(const at::Tensor& t) const { return t.slice(-1, d * hidden, (d + 1) * hidden); }
};

// gates_x [T, B, D*G*H] against w_hh [D, G*H, H] (and b_hn [D, H] for the GRU).
void check_layer(const at::Tensor& gates_x, const at::Tensor& w_hh, int64_t gates) {
  TORCH_CHECK(w_hh.dim() == 3 && (w_hh.size(0) == 1 || w_hh.size(0) == 2) && w_hh.size(1) == gates * w_hh.size(2) &&
                  w_hh.scalar_type() == at::kFloat,
              "float32 w_hh [D, ", gates, "H, H] with D = 1 or 2 expected, got ", w_hh.sizes());
  TORCH_CHECK(gates_x.dim() == 3 && gates_x.size(2) == w_hh.size(0) * w_hh.size(1), "gates_x [T, B, D*", gates,
              "H] expected for w_hh ", w_hh.sizes(), ", got ", gates_x.sizes());
}

std::vector<Direction> directions(const at::Tensor& w_hh, int64_t steps, int64_t batch, int64_t gates) {
  std::vector<Direction> out;
  for (int64_t d = 0; d < w_hh.size(0); ++d) out.push_back({d, w_hh.size(0), steps, batch, w_hh.size(2), gates});
  return out;
}

// W_hh's gradient of one direction: the sum over steps k >= 1 of grads(time k)^T h(time k-1), as one GEMM over
// every step (h_0 = 0 adds nothing, so the first step is left out). grads [T, B, G*H] (this direction's).
void weight_grad(at::Tensor d_w, const at::Tensor& grads, const at::Tensor& hs, const Direction& dir) {
  if (dir.steps < 2) return;
  // Forward: times 1..T-1 against 0..T-2. Backward: times 0..T-2 against 1..T-1.
  const int64_t grad_from = dir.d ? 0 : 1, state_from = dir.d ? 1 : 0;
  auto g = grads.slice(0, grad_from, grad_from + dir.steps - 1);
  auto h = dir.state_slice(hs.slice(0, state_from, state_from + dir.steps - 1));
  at::mm_out(d_w, g.reshape({-1, grads.size(2)}).t(), h.reshape({-1, dir.hidden}));
}

std::vector<at::Tensor> with_per_direction(std::vector<at::Tensor> out, const std::vector<at::Tensor>& blocks) {
  out.insert(out.end(), blocks.begin(), blocks.end());
  return out;
}

}  // namespace

// gates_x [T, B, D*4H] (x W_ih^T + b_ih + b_hh) -> hs, cs, tanh(cs) [T, B, D*H], then acts [T, B, 4H] (i, f, g,
// o) of each direction.
std::vector<at::Tensor> lstm_forward(const at::Tensor& gates_x, const at::Tensor& w_hh,
                                     const c10::optional<at::Tensor>& mask, int64_t first_partial) {
  check(gates_x, "gates_x");
  check_layer(gates_x, w_hh, 4);
  const int64_t steps = gates_x.size(0), batch = gates_x.size(1), dirs = w_hh.size(0), hidden = w_hh.size(2);
  const bool* running = running_rows(mask, steps, batch);
  std::vector<at::Tensor> acts;
  for (int64_t d = 0; d < dirs; ++d) acts.push_back(gates_x.new_empty({steps, batch, 4 * hidden}));
  auto hs = gates_x.new_empty({steps, batch, dirs * hidden});
  auto cs = at::empty_like(hs);
  auto tanh_cs = at::empty_like(hs);
  const auto zeros = gates_x.new_zeros({hidden});
  const float* zero = zeros.data_ptr<float>();
  const float* gx_all = gates_x.data_ptr<float>();
  float* cs_all = cs.data_ptr<float>();
  float* tc_all = tanh_cs.data_ptr<float>();
  float* hs_all = hs.data_ptr<float>();
  for (const Direction& dir : directions(w_hh, steps, batch, 4)) {
    float* acts_all = acts[dir.d].data_ptr<float>();
    for (int64_t k = 0; k < steps; ++k) {
      const int64_t t = dir.time(k);
      // h W_hh^T alone, straight into the step's gate rows: addmm would first copy gates_x[t] into place.
      auto out = acts[dir.d][t];
      if (k) {
        at::mm_out(out, dir.state_slice(hs[dir.time(k - 1)]), w_hh[dir.d].t());
      } else {
        out.zero_();
      }
      at::parallel_for(0, batch, kGrainRows, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          const int64_t state_at = dir.state_at(t, b);
          float* __restrict__ row = acts_all + dir.own_at(t, b);
          const float* __restrict__ gx = gx_all + dir.gate_at(t, b);
          for (int64_t j = 0; j < 4 * hidden; ++j) row[j] += gx[j];
          sigmoid_inplace(row, 2 * hidden);
          tanh_to(row + 2 * hidden, row + 2 * hidden, hidden);
          sigmoid_inplace(row + 3 * hidden, hidden);
          const float *__restrict__ i = row, *__restrict__ f = row + hidden, *__restrict__ g = row + 2 * hidden;
          const float* __restrict__ cp = dir.previous(cs_all, k, b, zero);
          float* __restrict__ c = cs_all + state_at;
          const bool runs = row_runs(running, batch, t, b, first_partial);
          for (int64_t j = 0; j < hidden; ++j) c[j] = runs ? f[j] * cp[j] + i[j] * g[j] : cp[j];
          tanh_to(tc_all + state_at, c, hidden);
          const float *__restrict__ o = row + 3 * hidden, *__restrict__ tc = tc_all + state_at;
          const float* __restrict__ hp = dir.previous(hs_all, k, b, zero);
          float* __restrict__ h = hs_all + state_at;
          for (int64_t j = 0; j < hidden; ++j) h[j] = runs ? o[j] * tc[j] : hp[j];
        }
      });
    }
  }
  return with_per_direction({hs, cs, tanh_cs}, acts);
}

// -> d_gates [T, B, D*4H] (the gradient of gates_x), d_w_hh [D, 4H, H].
std::vector<at::Tensor> lstm_backward(const at::Tensor& d_hs_in, const std::vector<at::Tensor>& acts,
                                      const at::Tensor& hs, const at::Tensor& cs, const at::Tensor& tanh_cs,
                                      const at::Tensor& w_hh, const c10::optional<at::Tensor>& mask,
                                      int64_t first_partial) {
  const at::Tensor d_hs = d_hs_in.contiguous();
  const int64_t steps = hs.size(0), batch = hs.size(1), dirs = w_hh.size(0), hidden = w_hh.size(2);
  const bool* running = running_rows(mask, steps, batch);
  auto d_gates = hs.new_empty({steps, batch, dirs * 4 * hidden});
  auto dh = hs.new_zeros({dirs, batch, hidden});  // from the step after: d_gates W_hh (+ held rows)
  auto dc = hs.new_zeros({dirs, batch, hidden});
  auto d_w = hs.new_zeros({dirs, 4 * hidden, hidden});
  const auto zeros = hs.new_zeros({hidden});  // c_0 = 0
  const float* zero = zeros.data_ptr<float>();
  const float* tc_all = tanh_cs.data_ptr<float>();
  const float* cs_all = cs.data_ptr<float>();
  const float* dh_in_all = d_hs.data_ptr<float>();
  float* dg_all = d_gates.data_ptr<float>();
  float* dh_all = dh.data_ptr<float>();
  float* dc_all = dc.data_ptr<float>();
  for (const Direction& dir : directions(w_hh, steps, batch, 4)) {
    const float* acts_all = acts[dir.d].data_ptr<float>();
    for (int64_t k = steps - 1; k >= 0; --k) {
      const int64_t t = dir.time(k);
      at::parallel_for(0, batch, kGrainRows, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          const int64_t state_at = dir.state_at(t, b);
          const float* __restrict__ row = acts_all + dir.own_at(t, b);
          float* __restrict__ dg = dg_all + dir.gate_at(t, b);
          float* __restrict__ dhb = dh_all + dir.buffer_row(b) * hidden;
          float* __restrict__ dcb = dc_all + dir.buffer_row(b) * hidden;
          const float* __restrict__ dhi = dh_in_all + state_at;
          if (!row_runs(running, batch, t, b, first_partial)) {  // held: the state's gradient passes straight through
            for (int64_t j = 0; j < hidden; ++j) dhb[j] += dhi[j];
            std::fill(dg, dg + 4 * hidden, 0.0f);
            continue;
          }
          lstm_backward_row(row, row + hidden, row + 2 * hidden, row + 3 * hidden, tc_all + state_at,
                            dir.previous(cs_all, k, b, zero), dhi, dg, dg + hidden, dg + 2 * hidden, dg + 3 * hidden,
                            dhb, dcb, hidden);
        }
      });
      if (k) dh[dir.d].addmm_(dir.own_slice(d_gates[t]), w_hh[dir.d]);
    }
    weight_grad(d_w[dir.d], dir.own_slice(d_gates), hs, dir);
  }
  return {d_gates, d_w};
}

// gates_x [T, B, D*3H] (x W_ih^T + b_ih + b_hh's r and z parts), b_hn [D, H]
// -> hs [T, B, D*H], hidden_n [T, B, D*H] (h W_hn^T + b_hn), then acts [T, B, 3H] (r, z, n) of each direction.
// One GEMM per step and direction, h W_hh^T for all three gates, into a contiguous scratch (no copy of gates_x).
std::vector<at::Tensor> gru_forward(const at::Tensor& gates_x, const at::Tensor& w_hh, const at::Tensor& b_hn,
                                    const c10::optional<at::Tensor>& mask, int64_t first_partial) {
  check(gates_x, "gates_x");
  check(b_hn, "b_hn");
  check_layer(gates_x, w_hh, 3);
  const int64_t steps = gates_x.size(0), batch = gates_x.size(1), dirs = w_hh.size(0), hidden = w_hh.size(2);
  TORCH_CHECK(b_hn.numel() == dirs * hidden, "b_hn must have ", dirs * hidden, " elements, got ", b_hn.numel());
  const bool* running = running_rows(mask, steps, batch);
  std::vector<at::Tensor> acts;
  for (int64_t d = 0; d < dirs; ++d) acts.push_back(gates_x.new_empty({steps, batch, 3 * hidden}));
  auto hidden_n = gates_x.new_empty({steps, batch, dirs * hidden});
  auto hs = gates_x.new_empty({steps, batch, dirs * hidden});
  auto hh = gates_x.new_zeros({dirs, batch, 3 * hidden});  // h W_hh^T; zero at the first step, where h = 0
  const auto zeros = gates_x.new_zeros({hidden});
  const float* zero = zeros.data_ptr<float>();
  const float* gx_all = gates_x.data_ptr<float>();
  float* hn_all = hidden_n.data_ptr<float>();
  float* hs_all = hs.data_ptr<float>();
  const float* hh_all = hh.data_ptr<float>();
  for (const Direction& dir : directions(w_hh, steps, batch, 3)) {
    float* acts_all = acts[dir.d].data_ptr<float>();
    const float* bn = b_hn.data_ptr<float>() + dir.d * hidden;
    for (int64_t k = 0; k < steps; ++k) {
      const int64_t t = dir.time(k);
      if (k) {
        auto out = hh[dir.d];
        at::mm_out(out, dir.state_slice(hs[dir.time(k - 1)]), w_hh[dir.d].t());
      }
      at::parallel_for(0, batch, kGrainRows, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          const int64_t state_at = dir.state_at(t, b);
          float* __restrict__ row = acts_all + dir.own_at(t, b);
          const float* __restrict__ gx = gx_all + dir.gate_at(t, b);
          const float* __restrict__ hhb = hh_all + dir.buffer_row(b) * 3 * hidden;
          float* __restrict__ hn = hn_all + state_at;
          for (int64_t j = 0; j < 2 * hidden; ++j) row[j] = gx[j] + hhb[j];
          sigmoid_inplace(row, 2 * hidden);
          const float *__restrict__ r = row, *__restrict__ z = row + hidden;
          float* __restrict__ n = row + 2 * hidden;
          for (int64_t j = 0; j < hidden; ++j) {
            hn[j] = hhb[2 * hidden + j] + bn[j];
            n[j] = gx[2 * hidden + j] + r[j] * hn[j];
          }
          tanh_to(n, n, hidden);
          const float* __restrict__ hp = dir.previous(hs_all, k, b, zero);
          float* __restrict__ h = hs_all + state_at;
          const bool runs = row_runs(running, batch, t, b, first_partial);
          for (int64_t j = 0; j < hidden; ++j) h[j] = runs ? n[j] + z[j] * (hp[j] - n[j]) : hp[j];
        }
      });
    }
  }
  return with_per_direction({hs, hidden_n}, acts);
}

// -> d_gates [T, B, D*3H] (the gradient of gates_x), d_w_hh [D, 3H, H], d_b_hn [D, H].
// d_hh is the gradient at h W_hh^T + [0, 0, b_hn]: r's and z's as in d_gates, n's times r. One GEMM per
// step and direction carries it back to h, and one over all steps gives W_hh's gradient.
std::vector<at::Tensor> gru_backward(const at::Tensor& d_hs_in, const std::vector<at::Tensor>& acts,
                                     const at::Tensor& hidden_n, const at::Tensor& hs, const at::Tensor& w_hh,
                                     const c10::optional<at::Tensor>& mask, int64_t first_partial) {
  const at::Tensor d_hs = d_hs_in.contiguous();
  const int64_t steps = hs.size(0), batch = hs.size(1), dirs = w_hh.size(0), hidden = w_hh.size(2);
  const bool* running = running_rows(mask, steps, batch);
  auto d_gates = hs.new_empty({steps, batch, dirs * 3 * hidden});
  auto dh = hs.new_zeros({dirs, batch, hidden});
  auto d_w = hs.new_zeros({dirs, 3 * hidden, hidden});
  auto d_b_hn = hs.new_empty({dirs, hidden});
  const auto zeros = hs.new_zeros({hidden});
  const float* zero = zeros.data_ptr<float>();
  const float* hn_all = hidden_n.data_ptr<float>();
  const float* hs_all = hs.data_ptr<float>();
  const float* dh_in_all = d_hs.data_ptr<float>();
  float* dg_all = d_gates.data_ptr<float>();
  float* dh_all = dh.data_ptr<float>();
  for (const Direction& dir : directions(w_hh, steps, batch, 3)) {
    const float* acts_all = acts[dir.d].data_ptr<float>();
    auto d_hh = hs.new_empty({steps, batch, 3 * hidden});  // per direction, as acts
    float* dhh_all = d_hh.data_ptr<float>();
    for (int64_t k = steps - 1; k >= 0; --k) {
      const int64_t t = dir.time(k);
      at::parallel_for(0, batch, kGrainRows, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          const int64_t state_at = dir.state_at(t, b);
          const float* __restrict__ row = acts_all + dir.own_at(t, b);
          const float* __restrict__ dhi = dh_in_all + state_at;
          float* __restrict__ dg = dg_all + dir.gate_at(t, b);
          float* __restrict__ dhh = dhh_all + dir.own_at(t, b);
          float* __restrict__ dhb = dh_all + dir.buffer_row(b) * hidden;
          if (!row_runs(running, batch, t, b, first_partial)) {
            for (int64_t j = 0; j < hidden; ++j) dhb[j] += dhi[j];
            std::fill(dg, dg + 3 * hidden, 0.0f);
            std::fill(dhh, dhh + 3 * hidden, 0.0f);
            continue;
          }
          gru_backward_row(row, row + hidden, row + 2 * hidden, hn_all + state_at, dir.previous(hs_all, k, b, zero),
                           dhi, dg, dg + hidden, dg + 2 * hidden, dhh, dhh + hidden, dhh + 2 * hidden, dhb, hidden);
        }
      });
      if (k) dh[dir.d].addmm_(d_hh[t], w_hh[dir.d]);  // at the first step: the gradient of h_0 = 0, unused
    }
    weight_grad(d_w[dir.d], d_hh, hs, dir);
    d_b_hn[dir.d].copy_(d_hh.slice(2, 2 * hidden).sum({0, 1}));
  }
  return {d_gates, d_w, d_b_hn};
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
