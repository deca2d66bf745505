// A direct 3x3 float32 convolution for XLA:CPU (an XLA FFI handler), stride s = 1 or 2.
//
// y[b, h, w, o] = sum_{u, v, i} x[b, s*h + u - pad_top, s*w + v - pad_left, i] * k[u, v, i, o]
// (x zero outside the image). x: (B, H, W, C) NHWC; k: (3, 3, C, Co) HWIO with Co a multiple of
// 16; y: (B, Ho, Wo, Co), whose size sets the bottom and right padding.
//
// Why: XLA:CPU's Eigen convolution is slow for the thin layers of the CPU-sized backbone (1.8 ms
// against oneDNN's 1.1 ms for 16 images of 48x36x16 -> 16). This kernel keeps a tile of RW
// output pixels x NV vectors of 16 output channels in AVX-512 registers and streams the 9 x C
// inputs of each pixel as broadcasts against rows of the kernel: RW * NV fused multiply-adds per
// RW + NV loads. The row of W pixels is cut into near-equal tiles (no 1-pixel remainders) and the
// output channels into blocks of NV vectors, picked per call by a cost model of that count.
// Each image is first copied into a zero-padded scratch buffer, so the inner loop has no border
// tests. Images are shared out over XLA's intra-op thread pool.
//
// Built by `python -m posejax.kernels.build` (run by `make setup`); the Python side
// (posejax/kernels/__init__.py) only uses it when the CPU has AVX-512F (posejax_conv3x3_supported).

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// One tile: RW consecutive output pixels of one row, NV * 16 output channels.
// x points at the tile's first input pixel (top-left tap) in the padded image of row pitch
// Wp pixels; sc = stride * C floats between the inputs of neighbouring output pixels; k at the
// tile's first output channel; y at its first output.
template <int RW, int NV>
void Tile(const float* __restrict x, int64_t Wp, int C, int64_t sc, const float* __restrict k,
          int Co, float* __restrict y) {
  __m512 acc[RW][NV];
  for (int r = 0; r < RW; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int u = 0; u < 3; ++u) {
    for (int v = 0; v < 3; ++v) {
      const float* xv = x + (u * Wp + v) * C;
      const float* kv = k + static_cast<int64_t>(u * 3 + v) * C * Co;
      for (int i = 0; i < C; ++i) {
        __m512 kj[NV];
        for (int j = 0; j < NV; ++j) kj[j] = _mm512_loadu_ps(kv + static_cast<int64_t>(i) * Co + 16 * j);
        for (int r = 0; r < RW; ++r) {
          const __m512 xb = _mm512_set1_ps(xv[r * sc + i]);
          for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(xb, kj[j], acc[r][j]);
        }
      }
    }
  }
  for (int r = 0; r < RW; ++r)
    for (int j = 0; j < NV; ++j) _mm512_storeu_ps(y + static_cast<int64_t>(r) * Co + 16 * j, acc[r][j]);
}

using TileFn = void (*)(const float*, int64_t, int, int64_t, const float*, int, float*);
constexpr int kMaxNV = 4;
// The widest tile for each NV: RW * NV accumulators plus NV kernel rows within 32 registers.
constexpr int kMaxRW[kMaxNV + 1] = {0, 14, 12, 8, 6};

template <int NV, int... R>
constexpr std::array<TileFn, sizeof...(R)> TilesOf(std::integer_sequence<int, R...>) {
  return {Tile<R + 1, NV>...};
}
const std::array<TileFn, 14> kTiles[kMaxNV + 1] = {
    {},
    TilesOf<1>(std::make_integer_sequence<int, 14>{}),
    TilesOf<2>(std::make_integer_sequence<int, 14>{}),
    TilesOf<3>(std::make_integer_sequence<int, 14>{}),
    TilesOf<4>(std::make_integer_sequence<int, 14>{}),
};

// The tiling of one output row: W pixels in `count` near-equal tiles (the first W % count one
// pixel wider), Co / 16 vectors in blocks of `nv` (the last possibly narrower).
struct Plan {
  int nv = 1;
  int count = 1;
  int Width(int t, int W) const { return W / count + (t < W % count); }
};

// Issue slots per row for a block size nv: each (tap, input channel) step of a tile costs
// max(FMAs, loads) = max(rw * vb, rw + vb); a few more per tile for its stores and setup.
int64_t RowCost(int W, int vectors, int nv) {
  const int count = (W + kMaxRW[nv] - 1) / kMaxRW[nv];
  int64_t cost = 0;
  for (int cb = 0; cb < vectors; cb += nv) {
    const int vb = std::min(nv, vectors - cb);
    for (int t = 0; t < count; ++t) {
      const int rw = W / count + (t < W % count);
      cost += std::max(rw * vb, rw + vb) + 6;
    }
  }
  return cost;
}

Plan MakePlan(int W, int vectors) {
  Plan plan;
  int64_t best = RowCost(W, vectors, 1);
  for (int nv = 2; nv <= kMaxNV; ++nv) {
    const int64_t cost = RowCost(W, vectors, nv);
    if (cost < best) best = cost, plan.nv = nv;
  }
  plan.count = (W + kMaxRW[plan.nv] - 1) / kMaxRW[plan.nv];
  return plan;
}

// The convolution's sizes: input H x W x C, output Ho x Wo x Co, stride, top/left padding.
struct Geometry {
  int H, W, C, Ho, Wo, Co, stride, pad_top, pad_left;
  int64_t Hp() const { return static_cast<int64_t>(Ho - 1) * stride + 3; }  // padded input rows
  int64_t Wp() const { return static_cast<int64_t>(Wo - 1) * stride + 3; }  // and columns
};

// Images [begin, end) of the batch, through a zero-padded copy of each in `scratch`.
void ConvImages(const float* x, const float* k, float* y, int64_t begin, int64_t end,
                const Geometry& g, const Plan& plan, std::vector<float>& scratch) {
  const int64_t Hp = g.Hp(), Wp = g.Wp(), C = g.C, sc = g.stride * C;
  scratch.assign(static_cast<size_t>(Hp * Wp * C), 0.0f);  // the padding stays zero
  // The part of the image the output reads: input rows/columns that land inside the scratch.
  const int row0 = std::max(0, -g.pad_top), col0 = std::max(0, -g.pad_left);
  const int row1 = static_cast<int>(std::min<int64_t>(g.H, Hp - g.pad_top));
  const int col1 = static_cast<int>(std::min<int64_t>(g.W, Wp - g.pad_left));
  const int vectors = g.Co / 16;
  for (int64_t b = begin; b < end; ++b) {
    const float* image = x + b * g.H * g.W * C;
    for (int h = row0; h < row1; ++h)
      std::memcpy(scratch.data() + ((h + g.pad_top) * Wp + g.pad_left + col0) * C,
                  image + (static_cast<int64_t>(h) * g.W + col0) * C,
                  sizeof(float) * (col1 - col0) * C);
    for (int h = 0; h < g.Ho; ++h) {
      const float* row = scratch.data() + h * g.stride * Wp * C;
      float* out = y + (b * g.Ho + h) * g.Wo * g.Co;
      for (int cb = 0; cb < vectors; cb += plan.nv) {
        const auto& tiles = kTiles[std::min(plan.nv, vectors - cb)];
        int w0 = 0;
        for (int t = 0; t < plan.count; ++t) {
          const int rw = plan.Width(t, g.Wo);
          tiles[rw - 1](row + w0 * sc, Wp, g.C, sc, k + 16 * cb, g.Co,
                        out + static_cast<int64_t>(w0) * g.Co + 16 * cb);
          w0 += rw;
        }
      }
    }
  }
}

// Work shared over the pool: chunks of images are claimed through an atomic counter, by the
// calling thread and by the tasks it schedules. The caller never waits for a task that has not
// started (it claims whatever is left itself), so a busy or single-threaded pool cannot deadlock.
struct Shared {
  const float* x;
  const float* k;
  float* y;
  int64_t batch, per_chunk, chunks;
  Geometry g;
  Plan plan;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void Work() {
    thread_local std::vector<float> scratch;
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      const int64_t begin = c * per_chunk, end = std::min(batch, begin + per_chunk);
      ConvImages(x, k, y, begin, end, g, plan, scratch);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error Conv3x3(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pad_top,
                   int64_t pad_left) {
  const auto xd = x.dimensions();
  const auto kd = k.dimensions();
  const auto yd = y->dimensions();
  if (xd.size() != 4 || kd.size() != 4 || yd.size() != 4 || kd[0] != 3 || kd[1] != 3 ||
      kd[2] != xd[3] || kd[3] % 16 != 0 || yd[0] != xd[0] || yd[3] != kd[3] ||
      (stride != 1 && stride != 2) || pad_top < 0 || pad_top > 2 || pad_left < 0 ||
      pad_left > 2) {
    return ffi::Error::InvalidArgument(
        "posejax_conv3x3: expected x (B, H, W, C), kernel (3, 3, C, Co) with Co % 16 == 0, "
        "output (B, Ho, Wo, Co), stride 1 or 2 and padding 0..2");
  }
  auto shared = std::make_shared<Shared>();
  shared->x = x.typed_data();
  shared->k = k.typed_data();
  shared->y = y->typed_data();
  shared->batch = xd[0];
  Geometry& g = shared->g;
  g.H = static_cast<int>(xd[1]), g.W = static_cast<int>(xd[2]), g.C = static_cast<int>(xd[3]);
  g.Ho = static_cast<int>(yd[1]), g.Wo = static_cast<int>(yd[2]), g.Co = static_cast<int>(yd[3]);
  g.stride = static_cast<int>(stride);
  g.pad_top = static_cast<int>(pad_top), g.pad_left = static_cast<int>(pad_left);
  shared->plan = MakePlan(g.Wo, g.Co / 16);
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t chunks = std::min<int64_t>(shared->batch, threads);
  shared->per_chunk = chunks ? (shared->batch + chunks - 1) / chunks : 1;
  shared->chunks = chunks ? (shared->batch + shared->per_chunk - 1) / shared->per_chunk : 0;
  for (int64_t t = 1; t < shared->chunks; ++t) pool.Schedule([shared] { shared->Work(); });
  shared->Work();
  while (shared->done.load(std::memory_order_acquire) < shared->chunks) _mm_pause();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(posejax_conv3x3, Conv3x3,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

// Whether this CPU can run the kernel (it is compiled for AVX-512F).
extern "C" int posejax_conv3x3_supported() { return __builtin_cpu_supports("avx512f") ? 1 : 0; }
