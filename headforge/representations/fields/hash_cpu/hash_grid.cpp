// Multi-resolution hash encoding on the CPU: forward (8-tap trilinear gather per level) and the backward pass
// into the table. Same arithmetic and layout as headforge/representations/fields/hash_grid.py (tiny-cuda-nn's):
// pos = x * scale_l + 0.5, corner c = 4 cz + 2 cy + cx, dense levels index (i + j res + k res^2) mod size_l,
// hashed levels (i * 1 ^ j * 2654435761 ^ k * 805459861) mod T, both plus the level's offset.
// Forward runs in parallel over blocks of points; backward in parallel over levels (each level owns a disjoint slice of
// the table, so no atomics are needed and the result is deterministic).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>

namespace {

struct Level {
  float scale;
  int64_t res, size, offset;
  bool hashed;
};

std::vector<Level> levels_of(const torch::Tensor& scales, const torch::Tensor& resolutions,
                             const torch::Tensor& sizes, const torch::Tensor& offsets, int64_t n_dense) {
  const int64_t L = scales.size(0);
  std::vector<Level> out(L);
  auto s = scales.accessor<float, 1>();
  auto r = resolutions.accessor<int64_t, 1>();
  auto z = sizes.accessor<int64_t, 1>();
  auto o = offsets.accessor<int64_t, 1>();
  for (int64_t l = 0; l < L; ++l) out[l] = Level{s[l], r[l], z[l], o[l], l >= n_dense};
  return out;
}

// the 8 table rows and trilinear weights of point p at one level
inline void corners(const float* p, const Level& lv, int64_t mask, int64_t idx[8], float w[8]) {
  int64_t base[3];
  float frac[3];
  for (int a = 0; a < 3; ++a) {
    float x = std::min(std::max(p[a], 0.0f), 1.0f);
    float pos = x * lv.scale + 0.5f;
    float b = std::floor(pos);
    base[a] = static_cast<int64_t>(b);
    frac[a] = pos - b;
  }
  for (int c = 0; c < 8; ++c) {
    const int64_t cx = base[0] + (c & 1), cy = base[1] + ((c >> 1) & 1), cz = base[2] + ((c >> 2) & 1);
    int64_t i;
    if (lv.hashed) {
      const uint32_t h = static_cast<uint32_t>(cx) ^ (static_cast<uint32_t>(cy) * 2654435761u) ^
                         (static_cast<uint32_t>(cz) * 805459861u);
      i = static_cast<int64_t>(h) & mask;
    } else {
      i = (cx + cy * lv.res + cz * lv.res * lv.res) % lv.size;
    }
    idx[c] = i + lv.offset;
    w[c] = ((c & 1) ? frac[0] : 1.0f - frac[0]) * (((c >> 1) & 1) ? frac[1] : 1.0f - frac[1]) *
           (((c >> 2) & 1) ? frac[2] : 1.0f - frac[2]);
  }
}

void check(const torch::Tensor& x, const torch::Tensor& table) {
  TORCH_CHECK(x.device().is_cpu() && table.device().is_cpu(), "hash_grid CPU kernel needs CPU tensors");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && table.scalar_type() == torch::kFloat32,
              "hash_grid CPU kernel needs float32 tensors");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3 && x.is_contiguous(), "points must be contiguous [N, 3]");
  TORCH_CHECK(table.dim() == 2 && table.is_contiguous(), "table must be contiguous [E, F]");
}

torch::Tensor encode_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales, torch::Tensor resolutions,
                             torch::Tensor sizes, torch::Tensor offsets, int64_t n_dense, int64_t log2_table_size) {
  check(x, table);
  const auto lv = levels_of(scales, resolutions, sizes, offsets, n_dense);
  const int64_t N = x.size(0), L = static_cast<int64_t>(lv.size()), F = table.size(1);
  const int64_t mask = (int64_t(1) << log2_table_size) - 1;
  auto out = torch::empty({N, L * F}, x.options());
  const float* px = x.data_ptr<float>();
  const float* tb = table.data_ptr<float>();
  float* po = out.data_ptr<float>();
  // level-major inside each block of points: one level's slice of the table (<= 2^log2_table_size rows) stays
  // in cache while the block's points gather from it; point-major order would touch the whole table per point
  at::parallel_for(0, N, 4096, [&](int64_t begin, int64_t end) {
    int64_t idx[8];
    float w[8];
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t n = begin; n < end; ++n) {
        corners(px + 3 * n, lv[l], mask, idx, w);
        float* o = po + n * L * F + l * F;
        for (int64_t f = 0; f < F; ++f) o[f] = 0.0f;
        for (int c = 0; c < 8; ++c) {
          const float* row = tb + idx[c] * F;
          for (int64_t f = 0; f < F; ++f) o[f] += w[c] * row[f];
        }
      }
    }
  });
  return out;
}

torch::Tensor encode_backward(torch::Tensor x, torch::Tensor grad_out, int64_t table_rows, int64_t n_features,
                              torch::Tensor scales, torch::Tensor resolutions, torch::Tensor sizes,
                              torch::Tensor offsets, int64_t n_dense, int64_t log2_table_size) {
  TORCH_CHECK(grad_out.scalar_type() == torch::kFloat32 && grad_out.is_contiguous(), "grad must be contiguous f32");
  const auto lv = levels_of(scales, resolutions, sizes, offsets, n_dense);
  const int64_t N = x.size(0), L = static_cast<int64_t>(lv.size()), F = n_features;
  const int64_t mask = (int64_t(1) << log2_table_size) - 1;
  auto grad_table = torch::zeros({table_rows, F}, x.options());
  const float* px = x.data_ptr<float>();
  const float* pg = grad_out.data_ptr<float>();
  float* gt = grad_table.data_ptr<float>();
  at::parallel_for(0, L, 1, [&](int64_t begin, int64_t end) {
    int64_t idx[8];
    float w[8];
    for (int64_t l = begin; l < end; ++l) {
      for (int64_t n = 0; n < N; ++n) {
        const float* g = pg + n * L * F + l * F;
        bool any = false;
        for (int64_t f = 0; f < F; ++f) any |= g[f] != 0.0f;
        if (!any) continue;
        corners(px + 3 * n, lv[l], mask, idx, w);
        for (int c = 0; c < 8; ++c) {
          float* row = gt + idx[c] * F;
          for (int64_t f = 0; f < F; ++f) row[f] += w[c] * g[f];
        }
      }
    }
  });
  return grad_table;
}

}  // namespace

TORCH_LIBRARY(headforge_hash, m) {
  m.def("encode_forward", &encode_forward);
  m.def("encode_backward", &encode_backward);
}
