// Z-buffer triangle rasterisation on the CPU: the same arithmetic as the pure-PyTorch
// backend of facetex/face3d/rasterizer.py, one triangle's bounding box at a time.
//
// Every float operation below mirrors one PyTorch elementwise operation of the torch
// backend, in the same order and precision (compiled with -ffp-contract=off, so no fused
// multiply-adds), so the inside tests and the depth keys are bit-identical: the same
// triangle wins every pixel. Visibility is a 64-bit key per pixel, fp32 depth bits above
// the face index, the smallest key wins (nearest, then smallest index), so the result
// does not depend on the order in which triangles or row bands are processed.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

namespace {

constexpr uint64_t kEmpty = std::numeric_limits<int64_t>::max();

template <typename T>
struct Triangle {
  T dx[3], dy[3], ux[3], uy[3], threshold[3];  // edge k: dx (py - uy) - dy (px - ux) > threshold
  T za = 0, gx = 0, gy = 0, ax = 0, ay = 0;     // depth plane relative to the mesh's minimum depth
  int64_t face, col0, col1, row0, row1;         // pixel bounding box (within the band), inclusive
};

inline uint32_t float_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// Set up face f (the torch backend's _triangle_table, one row): false when it cannot
// cover a pixel centre of rows [row_begin, row_end) (degenerate, not finite, culled, off-image).
template <typename T>
bool setup_triangle(const T* xy, const T* z, T z_min, const int64_t* corner, int64_t f, int64_t height,
                    int64_t width, int64_t row_begin, int64_t row_end, bool cull_backfaces, Triangle<T>& t) {
  T x[3], y[3];
  bool finite = true;
  for (int k = 0; k < 3; ++k) {
    x[k] = xy[2 * corner[k]];
    y[k] = xy[2 * corner[k] + 1];
    finite &= std::isfinite(x[k]) && std::isfinite(y[k]);
    if (z != nullptr) finite &= std::isfinite(z[corner[k]]);
  }
  if (!finite) return false;
  const T lo_y = std::min(std::min(y[0], y[1]), y[2]), hi_y = std::max(std::max(y[0], y[1]), y[2]);
  const T first_y = std::max(std::ceil(lo_y - T(0.5)), T(0));
  const T last_y = std::min(std::floor(hi_y - T(0.5)), T(height - 1));
  if (!(last_y >= first_y) || last_y < T(row_begin) || first_y >= T(row_end)) return false;
  const T lo_x = std::min(std::min(x[0], x[1]), x[2]), hi_x = std::max(std::max(x[0], x[1]), x[2]);
  const T first_x = std::max(std::ceil(lo_x - T(0.5)), T(0));
  const T last_x = std::min(std::floor(hi_x - T(0.5)), T(width - 1));
  if (!(last_x >= first_x)) return false;
  const T area = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0]);
  if (area == 0 || (cull_backfaces && !(area < 0))) return false;
  t.face = f;
  t.col0 = static_cast<int64_t>(first_x);
  t.col1 = static_cast<int64_t>(last_x);
  t.row0 = std::max(static_cast<int64_t>(first_y), row_begin);
  t.row1 = std::min(static_cast<int64_t>(last_y), row_end - 1);
  const T below_zero = std::nextafter(T(0), T(-1));
  const T orientation = area > 0 ? T(1) : T(-1);
  for (int k = 0; k < 3; ++k) {
    const int i = (k + 1) % 3, j = (k + 2) % 3;
    // Canonical endpoint order (lexicographic in x, then y) makes shared edges bit-identical.
    const bool swap = (x[j] < x[i]) || (x[j] == x[i] && y[j] < y[i]);
    const T sx = swap ? x[j] : x[i], sy = swap ? y[j] : y[i];
    const T ex = swap ? x[i] : x[j], ey = swap ? y[i] : y[j];
    const T sign = swap ? -orientation : orientation;
    const T dir_x = (x[j] - x[i]) * orientation, dir_y = (y[j] - y[i]) * orientation;
    const bool top_left = (dir_y < 0) || (dir_y == 0 && dir_x > 0);
    t.dx[k] = (ex - sx) * sign;
    t.dy[k] = (ey - sy) * sign;
    t.ux[k] = sx;
    t.uy[k] = sy;
    t.threshold[k] = top_left ? below_zero : T(0);
  }
  if (z != nullptr) {
    const T tz0 = z[corner[0]] - z_min, tz1 = z[corner[1]] - z_min, tz2 = z[corner[2]] - z_min;
    const T dz1 = tz1 - tz0, dz2 = tz2 - tz0;
    t.za = tz0;
    t.gx = (dz1 * (y[2] - y[0]) - dz2 * (y[1] - y[0])) / area;
    t.gy = (dz2 * (x[1] - x[0]) - dz1 * (x[2] - x[0])) / area;
    t.ax = x[0];
    t.ay = y[0];
  }
  return true;
}

// Nearest triangle per pixel of rows [row_begin, row_end) of one mesh's key buffer.
template <typename T>
void fill_keys(const T* xy, const T* z, T z_min, const int64_t* faces, int64_t num_faces, int64_t height,
               int64_t width, int64_t row_begin, int64_t row_end, bool cull_backfaces, uint64_t* keys) {
  Triangle<T> t;
  for (int64_t f = 0; f < num_faces; ++f) {
    if (!setup_triangle<T>(xy, z, z_min, faces + 3 * f, f, height, width, row_begin, row_end, cull_backfaces, t)) {
      continue;
    }
    for (int64_t row = t.row0; row <= t.row1; ++row) {
      const T py = T(row) + T(0.5);
      const T ey0 = t.dx[0] * (py - t.uy[0]), ey1 = t.dx[1] * (py - t.uy[1]), ey2 = t.dx[2] * (py - t.uy[2]);
      const T depth_row = t.za + t.gy * (py - t.ay);
      uint64_t* line = keys + row * width;
      for (int64_t col = t.col0; col <= t.col1; ++col) {
        const T px = T(col) + T(0.5);
        const bool inside = (ey0 - t.dy[0] * (px - t.ux[0]) > t.threshold[0]) &&
                            (ey1 - t.dy[1] * (px - t.ux[1]) > t.threshold[1]) &&
                            (ey2 - t.dy[2] * (px - t.ux[2]) > t.threshold[2]);
        if (!inside) continue;
        uint64_t key = static_cast<uint64_t>(t.face);
        if (z != nullptr) {
          T depth = depth_row + t.gx * (px - t.ax);
          depth = depth < T(0) ? T(0) : depth;
          key |= static_cast<uint64_t>(float_bits(static_cast<float>(depth))) << 32;
        }
        if (key < line[col]) line[col] = key;
      }
    }
  }
}

// Barycentrics (and depth) of the winning triangle at each pixel centre of rows
// [row_begin, row_end), as in the torch backend's _fragments.
template <typename T>
void fragments(const uint64_t* keys, const T* xy, const T* z, const int64_t* faces, int64_t width, int64_t row_begin,
               int64_t row_end, int64_t* triangle_id, T* barycentric, T* depth) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const T py = T(row) + T(0.5);
    for (int64_t col = 0; col < width; ++col) {
      const int64_t pixel = row * width + col;
      const uint64_t key = keys[pixel];
      T* weights = barycentric + 3 * pixel;
      if (key == kEmpty) {
        triangle_id[pixel] = -1;
        weights[0] = weights[1] = weights[2] = T(0);
        depth[pixel] = std::numeric_limits<T>::infinity();
        continue;
      }
      const int64_t face = static_cast<int64_t>(key & 0xFFFFFFFFull);
      triangle_id[pixel] = face;
      const int64_t* corner = faces + 3 * face;
      const T ax = xy[2 * corner[0]], ay = xy[2 * corner[0] + 1];
      const T abx = xy[2 * corner[1]] - ax, aby = xy[2 * corner[1] + 1] - ay;
      const T acx = xy[2 * corner[2]] - ax, acy = xy[2 * corner[2] + 1] - ay;
      const T area = abx * acy - aby * acx;
      const T px = T(col) + T(0.5);
      const T dx = px - ax, dy = py - ay;
      const T b1 = (acy / area) * dx + (-acx / area) * dy;
      const T b2 = (-aby / area) * dx + (abx / area) * dy;
      weights[0] = T(1) - b1 - b2;
      weights[1] = b1;
      weights[2] = b2;
      depth[pixel] = z == nullptr ? T(0)
                                  : weights[0] * z[corner[0]] + weights[1] * z[corner[1]] + weights[2] * z[corner[2]];
    }
  }
}

template <typename T>
void rasterize_typed(const at::Tensor& xy, const at::Tensor& z, const at::Tensor& faces, int64_t height, int64_t width,
                     bool cull_backfaces, at::Tensor& triangle_id, at::Tensor& barycentric, at::Tensor& depth) {
  const int64_t batch = xy.size(0), num_vertices = xy.size(1), num_faces = faces.size(0);
  const bool has_depth = z.numel() > 0;
  const T* xy_data = xy.data_ptr<T>();
  const T* z_data = has_depth ? z.data_ptr<T>() : nullptr;
  const int64_t* face_data = faces.data_ptr<int64_t>();
  std::vector<uint64_t> keys(static_cast<size_t>(batch * height * width), kEmpty);
  // Row bands: enough for every thread to have work when the batch is small. Each band
  // sets up the triangles that reach it.
  const int64_t bands_per_item = std::max<int64_t>(1, std::min<int64_t>(height, at::get_num_threads()));
  std::vector<T> z_min(batch, T(0));
  for (int64_t b = 0; b < batch && has_depth; ++b) {
    const T* item_z = z_data + b * num_vertices;
    z_min[b] = std::numeric_limits<T>::infinity();
    for (int64_t v = 0; v < num_vertices; ++v) z_min[b] = std::min(z_min[b], item_z[v]);
  }
  int64_t* id_data = triangle_id.data_ptr<int64_t>();
  T* bary_data = barycentric.data_ptr<T>();
  T* depth_data = depth.data_ptr<T>();
  at::parallel_for(0, batch * bands_per_item, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / bands_per_item, band = task % bands_per_item;
      const int64_t row_begin = height * band / bands_per_item, row_end = height * (band + 1) / bands_per_item;
      const int64_t offset = b * height * width;
      const T* item_z = has_depth ? z_data + b * num_vertices : nullptr;
      fill_keys<T>(xy_data + 2 * b * num_vertices, item_z, z_min[b], face_data, num_faces, height, width, row_begin,
                   row_end, cull_backfaces, keys.data() + offset);
      fragments<T>(keys.data() + offset, xy_data + 2 * b * num_vertices, item_z, face_data, width, row_begin, row_end,
                   id_data + offset, bary_data + 3 * offset, depth_data + offset);
    }
  });
}

// xy (B, V, 2) float or double, z (B, V) same dtype or empty (no depth test: smallest
// face index wins), faces (F, 3) long. Returns triangle_id (B, H, W) long (-1 empty),
// barycentric (B, H, W, 3) and depth (B, H, W) (+inf empty, 0 without z).
std::tuple<at::Tensor, at::Tensor, at::Tensor> rasterize(const at::Tensor& xy_in, const at::Tensor& z_in,
                                                         const at::Tensor& faces_in, int64_t height, int64_t width,
                                                         bool cull_backfaces) {
  TORCH_CHECK(xy_in.device().is_cpu(), "facetex_raster runs on CPU tensors");
  TORCH_CHECK(xy_in.dim() == 3 && xy_in.size(2) == 2, "xy must be (B, V, 2)");
  TORCH_CHECK(faces_in.dim() == 2 && faces_in.size(1) == 3, "faces must be (F, 3)");
  TORCH_CHECK(faces_in.size(0) < (int64_t(1) << 32), "at most 2^32 faces");
  const at::Tensor xy = xy_in.contiguous();
  const at::Tensor z = z_in.numel() ? z_in.to(xy.scalar_type()).contiguous() : z_in;
  const at::Tensor faces = faces_in.to(at::kLong).contiguous();
  const int64_t batch = xy.size(0);
  at::Tensor triangle_id = at::empty({batch, height, width}, xy.options().dtype(at::kLong));
  at::Tensor barycentric = at::empty({batch, height, width, 3}, xy.options());
  at::Tensor depth = at::empty({batch, height, width}, xy.options());
  AT_DISPATCH_FLOATING_TYPES(xy.scalar_type(), "facetex_raster", [&] {
    rasterize_typed<scalar_t>(xy, z, faces, height, width, cull_backfaces, triangle_id, barycentric, depth);
  });
  return {triangle_id, barycentric, depth};
}

// attributes (B, V, C), faces (F, 3) long, triangle_id (B', H, W) long, barycentric
// (B', H, W, 3), B' 1 or B: (B, H, W, C), zero on empty pixels.
at::Tensor interpolate(const at::Tensor& attributes_in, const at::Tensor& faces_in, const at::Tensor& triangle_id_in,
                       const at::Tensor& barycentric_in) {
  TORCH_CHECK(attributes_in.device().is_cpu(), "facetex_raster runs on CPU tensors");
  const at::Tensor attributes = attributes_in.contiguous();
  const at::Tensor faces = faces_in.to(at::kLong).contiguous();
  const at::Tensor triangle_id = triangle_id_in.to(at::kLong).contiguous();
  const at::Tensor barycentric = barycentric_in.to(attributes.scalar_type()).contiguous();
  const int64_t batch = std::max(attributes.size(0), triangle_id.size(0));
  const int64_t num_vertices = attributes.size(1), channels = attributes.size(2);
  const int64_t height = triangle_id.size(1), width = triangle_id.size(2), pixels = height * width;
  at::Tensor out = at::empty({batch, height, width, channels}, attributes.options());
  const int64_t* face_data = faces.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(attributes.scalar_type(), "facetex_interpolate", [&] {
    const scalar_t* attr_data = attributes.data_ptr<scalar_t>();
    const scalar_t* bary_data = barycentric.data_ptr<scalar_t>();
    const int64_t* id_data = triangle_id.data_ptr<int64_t>();
    scalar_t* out_data = out.data_ptr<scalar_t>();
    at::parallel_for(0, batch * pixels, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) {
        const int64_t b = index / pixels, pixel = index % pixels;
        const int64_t raster = (triangle_id.size(0) == 1 ? 0 : b) * pixels + pixel;
        const scalar_t* attr = attr_data + (attributes.size(0) == 1 ? 0 : b) * num_vertices * channels;
        scalar_t* value = out_data + index * channels;
        const int64_t face = id_data[raster];
        if (face < 0) {
          for (int64_t c = 0; c < channels; ++c) value[c] = scalar_t(0);
          continue;
        }
        const int64_t* corner = face_data + 3 * face;
        const scalar_t* w = bary_data + 3 * raster;
        const scalar_t* a0 = attr + corner[0] * channels;
        const scalar_t* a1 = attr + corner[1] * channels;
        const scalar_t* a2 = attr + corner[2] * channels;
        for (int64_t c = 0; c < channels; ++c) value[c] = (a0[c] * w[0] + a1[c] * w[1]) + a2[c] * w[2];
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(facetex_raster, m) {
  m.def("rasterize", &rasterize);
  m.def("interpolate", &interpolate);
}
