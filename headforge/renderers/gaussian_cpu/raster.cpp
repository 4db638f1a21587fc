// Tile-based Gaussian-splat compositing on the CPU: binning, forward and hand-written backward.
// Same maths as gsplat's rasterize_to_pixels_3dgs (see gaussian_torch.py for the formulas).
// Threads pull tiles from an atomic counter inside at::parallel_for (load balancing, respects
// torch.set_num_threads). Within a tile the loop is Gaussian-outer / pixel-inner and only visits the
// pixels of the Gaussian's alpha >= 1/255 ellipse box (plus a 1 px margin), which gives the same
// per-pixel operation order as a pixel-outer loop. Backward writes one gradient record per
// (tile, Gaussian) intersection and reduces them serially, so results are deterministic.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int TILE = 16;
constexpr int NPIX = TILE * TILE;
constexpr float ALPHA_MAX = 0.999f;
constexpr float ALPHA_MIN = 1.f / 255.f;
constexpr float T_MIN = 1e-4f;

template <class F>
void parallel_dynamic(int64_t n, const F& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i);
  });
}

struct Tile {
  int x0, y0, x1, y1;  // pixel bounds [x0, x1) x [y0, y1)
};

inline Tile tile_bounds(int64_t t, int tiles_x, int width, int height) {
  const int tx = static_cast<int>(t % tiles_x), ty = static_cast<int>(t / tiles_x);
  return {tx * TILE, ty * TILE, std::min((tx + 1) * TILE, width), std::min((ty + 1) * TILE, height)};
}

// Pixel box of a Gaussian's alpha >= 1/255 region inside a tile (conservative: >= 1 px margin).
// Pixel centre px + 0.5 is within the ellipse's x-extent iff px in [mx - ex - 0.5, mx + ex - 0.5].
inline Tile gaussian_box(const Tile& t, float mx, float my, float a, float b, float c, float o) {
  const double det = double(a) * c - double(b) * b;
  const double s = std::log(255.0 * o) + 1e-4;  // sigma bound for o exp(-sigma) >= 1/255
  if (!(det > 0) || !(s >= 0) || !std::isfinite(mx) || !std::isfinite(my)) return t;
  const double ex = std::sqrt(2.0 * s * c / det), ey = std::sqrt(2.0 * s * a / det);
  auto clampi = [](double v, int lo, int hi) { return v <= lo ? lo : (v >= hi ? hi : static_cast<int>(v)); };
  return {clampi(std::floor(mx - ex - 0.5) - 1, t.x0, t.x1), clampi(std::floor(my - ey - 0.5) - 1, t.y0, t.y1),
          clampi(std::ceil(mx + ex - 0.5) + 2, t.x0, t.x1), clampi(std::ceil(my + ey - 0.5) + 2, t.y0, t.y1)};
}

void check_f32(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
}

// rects [C, N, 4] int32 half-open tile ranges, depths [C, N] -> offsets [C*T + 1] int64, ids [M] int32.
std::vector<at::Tensor> bin_gaussians(const at::Tensor& rects, const at::Tensor& depths, int64_t tiles_x,
                                      int64_t tiles_y) {
  TORCH_CHECK(rects.scalar_type() == at::kInt && rects.is_contiguous() && rects.dim() == 3, "bad rects");
  check_f32(depths, "depths");
  const int64_t C = rects.size(0), N = rects.size(1), T = tiles_x * tiles_y;
  const int32_t* r = rects.data_ptr<int32_t>();
  const float* z = depths.data_ptr<float>();
  at::Tensor offsets = at::zeros({C * T + 1}, rects.options().dtype(at::kLong));
  int64_t* off = offsets.data_ptr<int64_t>();
  for (int64_t g = 0; g < C * N; ++g) {
    const int32_t* q = r + 4 * g;
    const int64_t base = (g / N) * T;
    for (int y = q[1]; y < q[3]; ++y)
      for (int x = q[0]; x < q[2]; ++x) off[base + y * tiles_x + x + 1] += 1;
  }
  for (int64_t i = 0; i < C * T; ++i) off[i + 1] += off[i];
  at::Tensor ids = at::empty({off[C * T]}, rects.options());
  int32_t* id = ids.data_ptr<int32_t>();
  std::vector<int64_t> cursor(off, off + C * T);
  for (int64_t g = 0; g < C * N; ++g) {
    const int32_t* q = r + 4 * g;
    const int64_t base = (g / N) * T;
    for (int y = q[1]; y < q[3]; ++y)
      for (int x = q[0]; x < q[2]; ++x) id[cursor[base + y * tiles_x + x]++] = static_cast<int32_t>(g);
  }
  parallel_dynamic(C * T, [&](int64_t t) {
    std::sort(id + off[t], id + off[t + 1], [z](int32_t u, int32_t v) {
      return z[u] < z[v] || (z[u] == z[v] && u < v);
    });
  });
  return {offsets, ids};
}

// -> acc [C, H, W, D], alpha [C, H, W, 1], T_final [C, H, W], last [C, H, W] int32 (list position, -1)
std::vector<at::Tensor> rasterize_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& opacities, const at::Tensor& colors,
                                          const at::Tensor& offsets, const at::Tensor& ids, int64_t width,
                                          int64_t height) {
  check_f32(means2d, "means2d"), check_f32(conics, "conics"), check_f32(opacities, "opacities");
  check_f32(colors, "colors");
  const int64_t C = colors.size(0), D = colors.size(2);
  const int tiles_x = static_cast<int>((width + TILE - 1) / TILE);
  const int64_t T = tiles_x * ((height + TILE - 1) / TILE);
  TORCH_CHECK(offsets.numel() == C * T + 1, "offsets do not match the tile grid");
  auto opt = colors.options();
  at::Tensor acc = at::zeros({C, height, width, D}, opt), alpha = at::zeros({C, height, width, 1}, opt);
  at::Tensor t_final = at::ones({C, height, width}, opt);
  at::Tensor last = at::full({C, height, width}, -1, opt.dtype(at::kInt));
  const float *xy = means2d.data_ptr<float>(), *con = conics.data_ptr<float>();
  const float *op = opacities.data_ptr<float>(), *col = colors.data_ptr<float>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int32_t* id = ids.data_ptr<int32_t>();
  float *acc_p = acc.data_ptr<float>(), *alpha_p = alpha.data_ptr<float>(), *tf_p = t_final.data_ptr<float>();
  int32_t* last_p = last.data_ptr<int32_t>();

  parallel_dynamic(C * T, [&](int64_t tile) {
    const int64_t cam = tile / T, start = off[tile], end = off[tile + 1];
    if (start == end) return;
    const Tile tb = tile_bounds(tile % T, tiles_x, width, height);
    float Tr[NPIX], out[NPIX * 8];
    std::vector<float> out_big(D > 8 ? NPIX * D : 0);
    float* o_acc = D > 8 ? out_big.data() : out;
    int32_t lastk[NPIX];
    bool done[NPIX];
    std::fill(Tr, Tr + NPIX, 1.f), std::fill(o_acc, o_acc + NPIX * D, 0.f);
    std::fill(lastk, lastk + NPIX, -1), std::fill(done, done + NPIX, false);
    const int n_pix = (tb.x1 - tb.x0) * (tb.y1 - tb.y0);
    int n_done = 0;
    for (int64_t k = start; k < end && n_done < n_pix; ++k) {
      const int64_t g = id[k];
      const float o = op[g];
      if (o < ALPHA_MIN) continue;
      const float mx = xy[2 * g], my = xy[2 * g + 1], a = con[3 * g], b = con[3 * g + 1], c = con[3 * g + 2];
      const float* cg = col + g * D;
      const Tile box = gaussian_box(tb, mx, my, a, b, c, o);
      for (int py = box.y0; py < box.y1; ++py) {
        const float dy = my - (py + 0.5f);
        for (int px = box.x0; px < box.x1; ++px) {
          const int p = (py - tb.y0) * TILE + (px - tb.x0);
          if (done[p]) continue;
          const float dx = mx - (px + 0.5f);
          const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
          const float al = std::min(ALPHA_MAX, o * std::exp(-sigma));
          if (sigma < 0.f || al < ALPHA_MIN) continue;
          const float next_T = Tr[p] * (1.f - al);
          if (next_T <= T_MIN) {
            done[p] = true, ++n_done;
            continue;
          }
          const float w = al * Tr[p];
          for (int64_t d = 0; d < D; ++d) o_acc[p * D + d] += cg[d] * w;
          Tr[p] = next_T;
          lastk[p] = static_cast<int32_t>(k - start);
        }
      }
    }
    for (int py = tb.y0; py < tb.y1; ++py)
      for (int px = tb.x0; px < tb.x1; ++px) {
        const int p = (py - tb.y0) * TILE + (px - tb.x0);
        const int64_t q = (cam * height + py) * width + px;
        for (int64_t d = 0; d < D; ++d) acc_p[q * D + d] = o_acc[p * D + d];
        alpha_p[q] = 1.f - Tr[p], tf_p[q] = Tr[p], last_p[q] = lastk[p];
      }
  });
  return {acc, alpha, t_final, last};
}

// Back-to-front pass (as gsplat): -> v_means2d [C,N,2], v_conics [C,N,3], v_opacities [C,N], v_colors [C,N,D]
std::vector<at::Tensor> rasterize_backward(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& opacities, const at::Tensor& colors,
                                           const at::Tensor& offsets, const at::Tensor& ids,
                                           const at::Tensor& t_final, const at::Tensor& last,
                                           const at::Tensor& v_acc, const at::Tensor& v_alpha, int64_t width,
                                           int64_t height) {
  check_f32(v_acc, "v_acc"), check_f32(v_alpha, "v_alpha"), check_f32(t_final, "t_final");
  const int64_t C = colors.size(0), N = colors.size(1), D = colors.size(2), M = ids.numel();
  const int64_t R = 6 + D;  // per-intersection record: v_xy(2) v_conic(3) v_opacity(1) v_color(D)
  const int tiles_x = static_cast<int>((width + TILE - 1) / TILE);
  const int64_t T = tiles_x * ((height + TILE - 1) / TILE);
  at::Tensor rec = at::zeros({M, R}, colors.options());
  const float *xy = means2d.data_ptr<float>(), *con = conics.data_ptr<float>();
  const float *op = opacities.data_ptr<float>(), *col = colors.data_ptr<float>();
  const float *tf = t_final.data_ptr<float>(), *va = v_acc.data_ptr<float>(), *vt = v_alpha.data_ptr<float>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int32_t *id = ids.data_ptr<int32_t>(), *lst = last.data_ptr<int32_t>();
  float* rp = rec.data_ptr<float>();

  parallel_dynamic(C * T, [&](int64_t tile) {
    const int64_t cam = tile / T, start = off[tile];
    if (start == off[tile + 1]) return;
    const Tile tb = tile_bounds(tile % T, tiles_x, width, height);
    double Tr[NPIX], Tfin[NPIX], v_a[NPIX];
    std::vector<double> buf(NPIX * D, 0.0), v_out(NPIX * D, 0.0), lg(D);
    int32_t lastk[NPIX];
    int32_t max_last = -1;
    for (int p = 0; p < NPIX; ++p) lastk[p] = -1;
    for (int py = tb.y0; py < tb.y1; ++py)
      for (int px = tb.x0; px < tb.x1; ++px) {
        const int p = (py - tb.y0) * TILE + (px - tb.x0);
        const int64_t q = (cam * height + py) * width + px;
        Tr[p] = Tfin[p] = tf[q], v_a[p] = vt[q], lastk[p] = lst[q];
        for (int64_t d = 0; d < D; ++d) v_out[p * D + d] = va[q * D + d];
        max_last = std::max(max_last, lastk[p]);
      }
    for (int64_t k = start + max_last; k >= start; --k) {
      const int64_t g = id[k];
      const float o = op[g];
      if (o < ALPHA_MIN) continue;
      const float mx = xy[2 * g], my = xy[2 * g + 1], a = con[3 * g], b = con[3 * g + 1], c = con[3 * g + 2];
      const float* cg = col + g * D;
      const int32_t kl = static_cast<int32_t>(k - start);
      const Tile box = gaussian_box(tb, mx, my, a, b, c, o);
      double gx = 0, gy = 0, ga = 0, gb = 0, gc = 0, go = 0;
      std::fill(lg.begin(), lg.end(), 0.0);
      for (int py = box.y0; py < box.y1; ++py) {
        const float dy = my - (py + 0.5f);
        for (int px = box.x0; px < box.x1; ++px) {
          const int p = (py - tb.y0) * TILE + (px - tb.x0);
          if (kl > lastk[p]) continue;
          const float dx = mx - (px + 0.5f);
          const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
          const float vis = std::exp(-sigma);
          const float al = std::min(ALPHA_MAX, o * vis);
          if (sigma < 0.f || al < ALPHA_MIN) continue;
          const double ra = 1.0 / (1.0 - al);
          Tr[p] *= ra;
          const double fac = al * Tr[p];
          double v_alpha_p = Tfin[p] * ra * v_a[p];
          for (int64_t d = 0; d < D; ++d) {
            const double vo = v_out[p * D + d];
            lg[d] += fac * vo;
            v_alpha_p += (cg[d] * Tr[p] - buf[p * D + d] * ra) * vo;
            buf[p * D + d] += cg[d] * fac;
          }
          if (o * vis <= ALPHA_MAX) {
            const double v_sigma = -double(o) * vis * v_alpha_p;
            ga += 0.5 * v_sigma * dx * dx, gb += v_sigma * dx * dy, gc += 0.5 * v_sigma * dy * dy;
            gx += v_sigma * (a * dx + b * dy), gy += v_sigma * (b * dx + c * dy);
            go += vis * v_alpha_p;
          }
        }
      }
      float* out = rp + k * R;
      out[0] = float(gx), out[1] = float(gy), out[2] = float(ga), out[3] = float(gb), out[4] = float(gc);
      out[5] = float(go);
      for (int64_t d = 0; d < D; ++d) out[6 + d] = float(lg[d]);
    }
  });

  auto opt = colors.options();
  at::Tensor v_xy = at::zeros({C, N, 2}, opt), v_con = at::zeros({C, N, 3}, opt);
  at::Tensor v_op = at::zeros({C, N}, opt), v_col = at::zeros({C, N, D}, opt);
  std::vector<double> sums(C * N * R, 0.0);
  for (int64_t k = 0; k < M; ++k)
    for (int64_t j = 0; j < R; ++j) sums[id[k] * R + j] += rp[k * R + j];
  float *pxy = v_xy.data_ptr<float>(), *pc = v_con.data_ptr<float>(), *po = v_op.data_ptr<float>();
  float* pcol = v_col.data_ptr<float>();
  for (int64_t g = 0; g < C * N; ++g) {
    const double* s = sums.data() + g * R;
    pxy[2 * g] = float(s[0]), pxy[2 * g + 1] = float(s[1]);
    pc[3 * g] = float(s[2]), pc[3 * g + 1] = float(s[3]), pc[3 * g + 2] = float(s[4]);
    po[g] = float(s[5]);
    for (int64_t d = 0; d < D; ++d) pcol[g * D + d] = float(s[6 + d]);
  }
  return {v_xy, v_con, v_op, v_col};
}

}  // namespace

TORCH_LIBRARY(headforge_gs, m) {
  m.def("bin_gaussians(Tensor rects, Tensor depths, int tiles_x, int tiles_y) -> Tensor[]", &bin_gaussians);
  m.def("rasterize_forward(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, Tensor offsets, "
        "Tensor ids, int width, int height) -> Tensor[]",
        &rasterize_forward);
  m.def("rasterize_backward(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, Tensor offsets, "
        "Tensor ids, Tensor t_final, Tensor last, Tensor v_acc, Tensor v_alpha, int width, int height) "
        "-> Tensor[]",
        &rasterize_backward);
}
