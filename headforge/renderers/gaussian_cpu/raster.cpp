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

constexpr int TILE = 16;  // must equal gaussian_types.TILE_SIZE (checked by load_kernels via tile_size())
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

inline uint32_t span_mask(int lo, int hi) {  // bits [lo, hi) of a 16-pixel tile row
  return hi <= lo ? 0u : ((1u << hi) - 1u) & ~((1u << lo) - 1u);
}

void check_f32(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
}

// rects [C, N, 4] int32 half-open tile ranges, depths [C, N] -> offsets [C*T + 1] int64, ids [M] int32.
// Visible Gaussians are sorted once by (depth, flat index) and then scattered into their tiles in that
// order, so every tile list comes out depth-sorted with ties broken by index (the torch path's order).
std::vector<at::Tensor> bin_gaussians(const at::Tensor& rects, const at::Tensor& depths, int64_t tiles_x,
                                      int64_t tiles_y) {
  TORCH_CHECK(rects.scalar_type() == at::kInt && rects.is_contiguous() && rects.dim() == 3, "bad rects");
  check_f32(depths, "depths");
  const int64_t C = rects.size(0), N = rects.size(1), T = tiles_x * tiles_y;
  const int32_t* r = rects.data_ptr<int32_t>();
  const float* z = depths.data_ptr<float>();
  std::vector<int32_t> order;
  order.reserve(C * N);
  for (int64_t g = 0; g < C * N; ++g)
    if (r[4 * g + 2] > r[4 * g] && r[4 * g + 3] > r[4 * g + 1]) order.push_back(static_cast<int32_t>(g));
  std::sort(order.begin(), order.end(), [z](int32_t u, int32_t v) { return z[u] < z[v] || (z[u] == z[v] && u < v); });
  at::Tensor offsets = at::zeros({C * T + 1}, rects.options().dtype(at::kLong));
  int64_t* off = offsets.data_ptr<int64_t>();
  for (const int32_t g : order) {
    const int32_t* q = r + 4 * g;
    const int64_t base = (g / N) * T;
    for (int y = q[1]; y < q[3]; ++y)
      for (int x = q[0]; x < q[2]; ++x) off[base + y * tiles_x + x + 1] += 1;
  }
  for (int64_t i = 0; i < C * T; ++i) off[i + 1] += off[i];
  at::Tensor ids = at::empty({off[C * T]}, rects.options());
  int32_t* id = ids.data_ptr<int32_t>();
  std::vector<int64_t> cursor(off, off + C * T);
  for (const int32_t g : order) {
    const int32_t* q = r + 4 * g;
    const int64_t base = (g / N) * T;
    for (int y = q[1]; y < q[3]; ++y)
      for (int x = q[0]; x < q[2]; ++x) id[cursor[base + y * tiles_x + x]++] = g;
  }
  return {offsets, ids};
}

struct Scene {  // borrowed pointers into the [C, N, ...] per-view Gaussian tensors and the binning
  const float *xy, *con, *op, *col;
  const int64_t* off;
  const int32_t* id;
  int64_t D, T, width, height;
  int tiles_x;
};

Scene make_scene(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                 const at::Tensor& colors, const at::Tensor& offsets, const at::Tensor& ids, int64_t width,
                 int64_t height) {
  check_f32(means2d, "means2d"), check_f32(conics, "conics"), check_f32(opacities, "opacities");
  check_f32(colors, "colors");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && ids.scalar_type() == at::kInt, "bad binning dtypes");
  const int tiles_x = static_cast<int>((width + TILE - 1) / TILE);
  const int64_t T = tiles_x * ((height + TILE - 1) / TILE);
  TORCH_CHECK(offsets.numel() == colors.size(0) * T + 1, "offsets do not match the tile grid");
  return {means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(),
          colors.data_ptr<float>(), offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>(), colors.size(2), T,
          width, height, tiles_x};
}

// Front-to-back over one tile's list. DT > 0 fixes the channel count at compile time (DT = 0: runtime).
template <int DT>
void forward_tile(const Scene& s, int64_t tile, float* acc_p, float* alpha_p, float* tf_p, int32_t* last_p) {
  const int64_t D = DT > 0 ? DT : s.D;
  const int64_t cam = tile / s.T, start = s.off[tile], end = s.off[tile + 1];
  if (start == end) return;
  const Tile tb = tile_bounds(tile % s.T, s.tiles_x, s.width, s.height);
  float Tr[NPIX];
  std::vector<float> o_acc(NPIX * D, 0.f);
  int32_t lastk[NPIX];
  std::fill(Tr, Tr + NPIX, 1.f), std::fill(lastk, lastk + NPIX, -1);
  uint32_t active[TILE] = {0};  // bit x of row y: pixel (x0 + x, y0 + y) is inside and not finished
  for (int y = 0; y < tb.y1 - tb.y0; ++y) active[y] = (1u << (tb.x1 - tb.x0)) - 1u;
  int n_active = (tb.x1 - tb.x0) * (tb.y1 - tb.y0);
  for (int64_t k = start; k < end && n_active > 0; ++k) {
    const int64_t g = s.id[k];
    const float o = s.op[g];
    if (o < ALPHA_MIN) continue;  // alpha <= o for sigma >= 0: never composited
    const float mx = s.xy[2 * g], my = s.xy[2 * g + 1];
    const float a = s.con[3 * g], b = s.con[3 * g + 1], c = s.con[3 * g + 2];
    const float* cg = s.col + g * D;
    const Tile box = gaussian_box(tb, mx, my, a, b, c, o);
    const uint32_t cols = span_mask(box.x0 - tb.x0, box.x1 - tb.x0);
    for (int py = box.y0; py < box.y1; ++py) {
      const float dy = my - (py + 0.5f);
      uint32_t& row = active[py - tb.y0];
      for (uint32_t m = row & cols; m; m &= m - 1) {
        const int x = __builtin_ctz(m), px = tb.x0 + x, p = (py - tb.y0) * TILE + x;
        const float dx = mx - (px + 0.5f);
        const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
        const float al = std::min(ALPHA_MAX, o * std::exp(-sigma));
        if (sigma < 0.f || al < ALPHA_MIN) continue;
        const float next_T = Tr[p] * (1.f - al);
        if (next_T <= T_MIN) {  // this Gaussian is not composited; the pixel is finished
          row &= ~(1u << x), --n_active;
          continue;
        }
        const float w = al * Tr[p];
        float* o_p = o_acc.data() + p * D;
        for (int64_t d = 0; d < D; ++d) o_p[d] += cg[d] * w;
        Tr[p] = next_T;
        lastk[p] = static_cast<int32_t>(k - start);
      }
    }
  }
  for (int py = tb.y0; py < tb.y1; ++py)
    for (int px = tb.x0; px < tb.x1; ++px) {
      const int p = (py - tb.y0) * TILE + (px - tb.x0);
      const int64_t q = (cam * s.height + py) * s.width + px;
      for (int64_t d = 0; d < D; ++d) acc_p[q * D + d] = o_acc[p * D + d];
      alpha_p[q] = 1.f - Tr[p], tf_p[q] = Tr[p], last_p[q] = lastk[p];
    }
}

// -> acc [C, H, W, D], alpha [C, H, W, 1], T_final [C, H, W], last [C, H, W] int32 (list position, -1)
std::vector<at::Tensor> rasterize_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& opacities, const at::Tensor& colors,
                                          const at::Tensor& offsets, const at::Tensor& ids, int64_t width,
                                          int64_t height) {
  const Scene s = make_scene(means2d, conics, opacities, colors, offsets, ids, width, height);
  const int64_t C = colors.size(0);
  auto opt = colors.options();
  at::Tensor acc = at::zeros({C, height, width, s.D}, opt), alpha = at::zeros({C, height, width, 1}, opt);
  at::Tensor t_final = at::ones({C, height, width}, opt);
  at::Tensor last = at::full({C, height, width}, -1, opt.dtype(at::kInt));
  float *acc_p = acc.data_ptr<float>(), *alpha_p = alpha.data_ptr<float>(), *tf_p = t_final.data_ptr<float>();
  int32_t* last_p = last.data_ptr<int32_t>();
  parallel_dynamic(C * s.T, [&](int64_t tile) {
    if (s.D == 4) forward_tile<4>(s, tile, acc_p, alpha_p, tf_p, last_p);
    else forward_tile<0>(s, tile, acc_p, alpha_p, tf_p, last_p);
  });
  return {acc, alpha, t_final, last};
}

// Back-to-front over one tile's list (gsplat's scheme): recovers each pixel's transmittance by dividing
// the saved final one by (1 - alpha) in double precision and writes one gradient record
// [v_xy(2), v_conic(3), v_opacity, v_color(D)] per intersection.
template <int DT>
void backward_tile(const Scene& s, int64_t tile, const float* tf, const int32_t* lst, const float* va,
                   const float* vt, float* rp) {
  const int64_t D = DT > 0 ? DT : s.D, R = 6 + D;
  const int64_t cam = tile / s.T, start = s.off[tile];
  if (start == s.off[tile + 1]) return;
  const Tile tb = tile_bounds(tile % s.T, s.tiles_x, s.width, s.height);
  double Tr[NPIX], Tfin[NPIX], v_a[NPIX];
  std::vector<double> buf(NPIX * D, 0.0), v_out(NPIX * D, 0.0), lg(D);
  int32_t lastk[NPIX];
  int n_pix = 0;
  int order[NPIX];  // pixels with a contribution, by decreasing last index (they join the pass in turn)
  for (int py = tb.y0; py < tb.y1; ++py)
    for (int px = tb.x0; px < tb.x1; ++px) {
      const int p = (py - tb.y0) * TILE + (px - tb.x0);
      const int64_t q = (cam * s.height + py) * s.width + px;
      Tr[p] = Tfin[p] = tf[q], v_a[p] = vt[q], lastk[p] = lst[q];
      for (int64_t d = 0; d < D; ++d) v_out[p * D + d] = va[q * D + d];
      if (lastk[p] >= 0) order[n_pix++] = p;
    }
  if (n_pix == 0) return;
  std::sort(order, order + n_pix, [&](int u, int v) { return lastk[u] > lastk[v]; });
  uint32_t active[TILE] = {0};  // bit x of row y: this pixel's list reaches the current Gaussian
  int joined = 0;
  for (int64_t k = start + lastk[order[0]]; k >= start; --k) {
    const int32_t kl = static_cast<int32_t>(k - start);
    for (; joined < n_pix && lastk[order[joined]] >= kl; ++joined)
      active[order[joined] / TILE] |= 1u << (order[joined] % TILE);
    const int64_t g = s.id[k];
    const float o = s.op[g];
    if (o < ALPHA_MIN) continue;
    const float mx = s.xy[2 * g], my = s.xy[2 * g + 1];
    const float a = s.con[3 * g], b = s.con[3 * g + 1], c = s.con[3 * g + 2];
    const float* cg = s.col + g * D;
    const Tile box = gaussian_box(tb, mx, my, a, b, c, o);
    const uint32_t cols = span_mask(box.x0 - tb.x0, box.x1 - tb.x0);
    double gx = 0, gy = 0, ga = 0, gb = 0, gc = 0, go = 0;
    std::fill(lg.begin(), lg.end(), 0.0);
    for (int py = box.y0; py < box.y1; ++py) {
      const float dy = my - (py + 0.5f);
      for (uint32_t m = active[py - tb.y0] & cols; m; m &= m - 1) {
        const int x = __builtin_ctz(m), px = tb.x0 + x, p = (py - tb.y0) * TILE + x;
        const float dx = mx - (px + 0.5f);
        const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
        const float vis = std::exp(-sigma);
        const float al = std::min(ALPHA_MAX, o * vis);
        if (sigma < 0.f || al < ALPHA_MIN) continue;
        const double ra = 1.0 / (1.0 - al);
        const double T_k = Tr[p] * ra;  // transmittance in front of this Gaussian
        Tr[p] = T_k;
        const double fac = al * T_k;
        double v_alpha_p = Tfin[p] * ra * v_a[p];
        double* b_p = buf.data() + p * D;
        const double* vo = v_out.data() + p * D;
        for (int64_t d = 0; d < D; ++d) {
          lg[d] += fac * vo[d];
          v_alpha_p += (cg[d] * T_k - b_p[d] * ra) * vo[d];
          b_p[d] += cg[d] * fac;
        }
        if (o * vis <= ALPHA_MAX) {  // the clamp at 0.999 has zero gradient
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
}

// -> v_means2d [C, N, 2], v_conics [C, N, 3], v_opacities [C, N], v_colors [C, N, D]
std::vector<at::Tensor> rasterize_backward(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& opacities, const at::Tensor& colors,
                                           const at::Tensor& offsets, const at::Tensor& ids,
                                           const at::Tensor& t_final, const at::Tensor& last,
                                           const at::Tensor& v_acc, const at::Tensor& v_alpha, int64_t width,
                                           int64_t height) {
  check_f32(v_acc, "v_acc"), check_f32(v_alpha, "v_alpha"), check_f32(t_final, "t_final");
  const Scene s = make_scene(means2d, conics, opacities, colors, offsets, ids, width, height);
  const int64_t C = colors.size(0), N = colors.size(1), D = s.D, M = ids.numel(), R = 6 + D;
  at::Tensor rec = at::zeros({M, R}, colors.options());
  const float *tf = t_final.data_ptr<float>(), *va = v_acc.data_ptr<float>(), *vt = v_alpha.data_ptr<float>();
  const int32_t* lst = last.data_ptr<int32_t>();
  float* rp = rec.data_ptr<float>();
  parallel_dynamic(C * s.T, [&](int64_t tile) {
    if (D == 4) backward_tile<4>(s, tile, tf, lst, va, vt, rp);
    else backward_tile<0>(s, tile, tf, lst, va, vt, rp);
  });

  // Serial, ordered reduction of the records: deterministic gradients.
  auto opt = colors.options();
  at::Tensor v_xy = at::zeros({C, N, 2}, opt), v_con = at::zeros({C, N, 3}, opt);
  at::Tensor v_op = at::zeros({C, N}, opt), v_col = at::zeros({C, N, D}, opt);
  std::vector<double> sums(C * N * R, 0.0);
  for (int64_t k = 0; k < M; ++k)
    for (int64_t j = 0; j < R; ++j) sums[s.id[k] * R + j] += rp[k * R + j];
  float *pxy = v_xy.data_ptr<float>(), *pc = v_con.data_ptr<float>(), *po = v_op.data_ptr<float>();
  float* pcol = v_col.data_ptr<float>();
  for (int64_t g = 0; g < C * N; ++g) {
    const double* sg = sums.data() + g * R;
    pxy[2 * g] = float(sg[0]), pxy[2 * g + 1] = float(sg[1]);
    pc[3 * g] = float(sg[2]), pc[3 * g + 1] = float(sg[3]), pc[3 * g + 2] = float(sg[4]);
    po[g] = float(sg[5]);
    for (int64_t d = 0; d < D; ++d) pcol[g * D + d] = float(sg[6 + d]);
  }
  return {v_xy, v_con, v_op, v_col};
}

int64_t tile_size() { return TILE; }

}  // namespace

TORCH_LIBRARY(headforge_gs, m) {
  m.def("tile_size() -> int", &tile_size);
  m.def("bin_gaussians(Tensor rects, Tensor depths, int tiles_x, int tiles_y) -> Tensor[]", &bin_gaussians);
  m.def("rasterize_forward(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, Tensor offsets, "
        "Tensor ids, int width, int height) -> Tensor[]",
        &rasterize_forward);
  m.def("rasterize_backward(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, Tensor offsets, "
        "Tensor ids, Tensor t_final, Tensor last, Tensor v_acc, Tensor v_alpha, int width, int height) "
        "-> Tensor[]",
        &rasterize_backward);
}
