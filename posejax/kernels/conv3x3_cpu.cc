// Direct 3x3 float32 convolutions for XLA:CPU (XLA FFI handlers), stride s = 1 or 2.
//
// Forward (posejax_conv3x3):
//   y[b, h, w, o] = sum_{u, v, i} x[b, s*h + u - pad_top, s*w + v - pad_left, i] * k[u, v, i, o]
// Weight gradient (posejax_conv3x3_wgrad), for the same geometry:
//   dk[u, v, i, o] = sum_{b, h, w} x[b, s*h + u - pad_top, s*w + v - pad_left, i] * dy[b, h, w, o]
// (x zero outside the image). x: (B, H, W, C) NHWC; k, dk: (3, 3, C, Co) HWIO with Co a multiple
// of 16; y, dy: (B, Ho, Wo, Co), whose size sets the bottom and right padding.
//
// Why: XLA:CPU's Eigen convolution is slow for the thin layers of the CPU-sized backbone (1.8 ms
// against oneDNN's 1.1 ms for 16 images of 48x36x16 -> 16), and its weight gradient first
// transposes the input so that the batch is minor. Both kernels read NHWC as it is and keep a
// tile of accumulators in AVX-512 registers: the forward RW output pixels x NV vectors of 16
// output channels, streaming the 9 x C inputs of each pixel as broadcasts against rows of the
// kernel; the weight gradient RI input channels x NV vectors of output channels of one tap,
// streaming the pixels (RI broadcasts of x against NV vectors of dy per pixel). Either way
// RW (or RI) * NV fused multiply-adds per RW + NV loads. Rows of pixels (or the input channels)
// are cut into near-equal tiles, with no 1-wide remainders, and the output channels into blocks
// of NV vectors, picked per call by a cost model of that count. Each image is first copied into
// a zero-padded scratch buffer, so the inner loops have no border tests. Images are shared out
// over XLA's intra-op thread pool.
//
// Built by `python -m posejax.kernels.build` (run by `make setup`); the Python side
// (posejax/kernels/__init__.py) only uses it when the CPU has AVX-512F (posejax_conv3x3_supported).

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kMaxNV = 4;

// ---------------------------------------------------------------------------------------------
// Geometry, padding, tiling, threads

// The convolution's sizes: input H x W x C, output Ho x Wo x Co, stride, top/left padding.
struct Geometry {
  int H, W, C, Ho, Wo, Co, stride, pad_top, pad_left;
  int64_t Hp() const { return static_cast<int64_t>(Ho - 1) * stride + 3; }  // padded input rows
  int64_t Wp() const { return static_cast<int64_t>(Wo - 1) * stride + 3; }  // and columns
};

// Copies image b of x into `scratch`, (Hp, Wp, C) with zeros on the padding. The padding is
// zeroed when the scratch is first sized for g; every image overwrites the same interior.
void PadImage(const float* x, int64_t b, const Geometry& g, std::vector<float>& scratch,
              bool fresh) {
  const int64_t Hp = g.Hp(), Wp = g.Wp(), C = g.C;
  if (fresh) scratch.assign(static_cast<size_t>(Hp * Wp * C), 0.0f);
  // The part of the image the output reads: input rows/columns that land inside the scratch.
  const int row1 = static_cast<int>(std::min<int64_t>(g.H, Hp - g.pad_top));
  const int col1 = static_cast<int>(std::min<int64_t>(g.W, Wp - g.pad_left));
  const float* image = x + b * g.H * g.W * C;
  for (int h = 0; h < row1; ++h)
    std::memcpy(scratch.data() + ((h + g.pad_top) * Wp + g.pad_left) * C,
                image + static_cast<int64_t>(h) * g.W * C, sizeof(float) * col1 * C);
}

// `length` items in `count` near-equal tiles (the first length % count one item wider), and
// `vectors` vectors of 16 channels in blocks of `nv` (the last possibly narrower).
struct Plan {
  int nv = 1;
  int count = 1;
  int Width(int t, int length) const { return length / count + (t < length % count); }
};

// Issue slots for a tiling: each step of a tile costs max(FMAs, loads) = max(n * vb, n + vb);
// a few more per tile for its stores and set-up.
int64_t PlanCost(int length, int vectors, int nv, const int* max_width) {
  const int count = (length + max_width[nv] - 1) / max_width[nv];
  int64_t cost = 0;
  for (int cb = 0; cb < vectors; cb += nv) {
    const int vb = std::min(nv, vectors - cb);
    for (int t = 0; t < count; ++t) {
      const int n = length / count + (t < length % count);
      cost += std::max(n * vb, n + vb) + 6;
    }
  }
  return cost;
}

Plan MakePlan(int length, int vectors, const int* max_width) {
  Plan plan;
  int64_t best = PlanCost(length, vectors, 1, max_width);
  for (int nv = 2; nv <= kMaxNV; ++nv) {
    const int64_t cost = PlanCost(length, vectors, nv, max_width);
    if (cost < best) best = cost, plan.nv = nv;
  }
  plan.count = (length + max_width[plan.nv] - 1) / max_width[plan.nv];
  return plan;
}

// Runs work(chunk) for chunk in [0, chunks) on the calling thread and chunks - 1 tasks of the
// pool. Chunks are claimed through an atomic counter: the caller never waits for a task that
// has not started (it claims whatever is left itself), so a busy or single-threaded pool cannot
// deadlock; tasks that start after the last claim return at once.
void ParallelFor(ffi::ThreadPool& pool, int64_t chunks, std::function<void(int64_t)> work) {
  struct Shared {
    std::function<void(int64_t)> work;
    int64_t chunks;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    void Run() {
      for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
        work(c);
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  auto shared = std::make_shared<Shared>();
  shared->work = std::move(work);
  shared->chunks = chunks;
  for (int64_t t = 1; t < chunks; ++t) pool.Schedule([shared] { shared->Run(); });
  shared->Run();
  while (shared->done.load(std::memory_order_acquire) < chunks) _mm_pause();
}

// Splits `batch` images into one chunk per pool thread: returns (chunks, images per chunk).
std::pair<int64_t, int64_t> Chunks(ffi::ThreadPool& pool, int64_t batch) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t wanted = std::max<int64_t>(1, std::min(batch, threads));
  const int64_t per_chunk = std::max<int64_t>(1, (batch + wanted - 1) / wanted);
  return {(batch + per_chunk - 1) / per_chunk, per_chunk};
}

bool ReadGeometry(const ffi::Span<const int64_t>& xd, const ffi::Span<const int64_t>& kd,
                  const ffi::Span<const int64_t>& yd, int64_t stride, int64_t pad_top,
                  int64_t pad_left, Geometry& g) {
  if (xd.size() != 4 || kd.size() != 4 || yd.size() != 4 || kd[0] != 3 || kd[1] != 3 ||
      kd[2] != xd[3] || kd[3] % 16 != 0 || yd[0] != xd[0] || yd[3] != kd[3] ||
      (stride != 1 && stride != 2) || pad_top < 0 || pad_top > 2 || pad_left < 0 ||
      pad_left > 2) {
    return false;
  }
  g.H = static_cast<int>(xd[1]), g.W = static_cast<int>(xd[2]), g.C = static_cast<int>(xd[3]);
  g.Ho = static_cast<int>(yd[1]), g.Wo = static_cast<int>(yd[2]), g.Co = static_cast<int>(yd[3]);
  g.stride = static_cast<int>(stride);
  g.pad_top = static_cast<int>(pad_top), g.pad_left = static_cast<int>(pad_left);
  return true;
}

const char kShapes[] =
    "expected x (B, H, W, C), kernel (3, 3, C, Co) with Co % 16 == 0, output (B, Ho, Wo, Co), "
    "stride 1 or 2 and padding 0..2";

// ---------------------------------------------------------------------------------------------
// Forward

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
        for (int j = 0; j < NV; ++j)
          kj[j] = _mm512_loadu_ps(kv + static_cast<int64_t>(i) * Co + 16 * j);
        for (int r = 0; r < RW; ++r) {
          const __m512 xb = _mm512_set1_ps(xv[r * sc + i]);
          for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(xb, kj[j], acc[r][j]);
        }
      }
    }
  }
  for (int r = 0; r < RW; ++r)
    for (int j = 0; j < NV; ++j)
      _mm512_storeu_ps(y + static_cast<int64_t>(r) * Co + 16 * j, acc[r][j]);
}

using TileFn = void (*)(const float*, int64_t, int, int64_t, const float*, int, float*);
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

// Images [begin, end) of the batch, through a zero-padded copy of each.
void ConvImages(const float* x, const float* k, float* y, int64_t begin, int64_t end,
                const Geometry& g, const Plan& plan) {
  thread_local std::vector<float> scratch;
  const int64_t Wp = g.Wp(), sc = static_cast<int64_t>(g.stride) * g.C;
  const int vectors = g.Co / 16;
  for (int64_t b = begin; b < end; ++b) {
    PadImage(x, b, g, scratch, b == begin);
    for (int h = 0; h < g.Ho; ++h) {
      const float* row = scratch.data() + h * g.stride * Wp * g.C;
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

ffi::Error Conv3x3(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pad_top,
                   int64_t pad_left) {
  Geometry g;
  if (!ReadGeometry(x.dimensions(), k.dimensions(), y->dimensions(), stride, pad_top, pad_left,
                    g)) {
    return ffi::Error::InvalidArgument(std::string("posejax_conv3x3: ") + kShapes);
  }
  const Plan plan = MakePlan(g.Wo, g.Co / 16, kMaxRW);
  const int64_t batch = x.dimensions()[0];
  const auto [chunks, per_chunk] = Chunks(pool, batch);
  const float* xs = x.typed_data();
  const float* ks = k.typed_data();
  float* ys = y->typed_data();
  ParallelFor(pool, chunks, [&](int64_t c) {
    ConvImages(xs, ks, ys, c * per_chunk, std::min(batch, (c + 1) * per_chunk), g, plan);
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Weight gradient

// One tile of one tap (u, v): RI input channels x NV * 16 output channels, summed over the
// pixels of one image. x points at the tap's input of output pixel (0, 0) and the tile's first
// input channel in the padded image (row pitch Wp pixels); dy at output pixel (0, 0) and the
// tile's first output channel; dk at the tile's first entry (row pitch Co), added to.
template <int RI, int NV>
void WTile(const float* __restrict x, int64_t Wp, int C, int stride, const float* __restrict dy,
           int Ho, int Wo, int Co, float* __restrict dk) {
  __m512 acc[RI][NV];
  for (int r = 0; r < RI; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_loadu_ps(dk + static_cast<int64_t>(r) * Co + 16 * j);
  const int64_t sc = static_cast<int64_t>(stride) * C;
  for (int h = 0; h < Ho; ++h) {
    const float* xr = x + static_cast<int64_t>(h) * stride * Wp * C;
    const float* dr = dy + static_cast<int64_t>(h) * Wo * Co;
    for (int w = 0; w < Wo; ++w) {
      __m512 dj[NV];
      for (int j = 0; j < NV; ++j) dj[j] = _mm512_loadu_ps(dr + static_cast<int64_t>(w) * Co + 16 * j);
      const float* xp = xr + w * sc;
      for (int r = 0; r < RI; ++r) {
        const __m512 xb = _mm512_set1_ps(xp[r]);
        for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(xb, dj[j], acc[r][j]);
      }
    }
  }
  for (int r = 0; r < RI; ++r)
    for (int j = 0; j < NV; ++j) _mm512_storeu_ps(dk + static_cast<int64_t>(r) * Co + 16 * j, acc[r][j]);
}

using WTileFn = void (*)(const float*, int64_t, int, int, const float*, int, int, int, float*);
// The widest tile for each NV: RI * NV accumulators plus NV rows of dy within 32 registers.
constexpr int kMaxRI[kMaxNV + 1] = {0, 16, 12, 8, 6};

template <int NV, int... R>
constexpr std::array<WTileFn, sizeof...(R)> WTilesOf(std::integer_sequence<int, R...>) {
  return {WTile<R + 1, NV>...};
}
const std::array<WTileFn, 16> kWTiles[kMaxNV + 1] = {
    {},
    WTilesOf<1>(std::make_integer_sequence<int, 16>{}),
    WTilesOf<2>(std::make_integer_sequence<int, 16>{}),
    WTilesOf<3>(std::make_integer_sequence<int, 16>{}),
    WTilesOf<4>(std::make_integer_sequence<int, 16>{}),
};

// Images [begin, end) of the batch, summed into dk (3, 3, C, Co), which the caller zeroed.
void WeightGradImages(const float* x, const float* dy, float* dk, int64_t begin, int64_t end,
                      const Geometry& g, const Plan& plan) {
  thread_local std::vector<float> scratch;
  const int64_t Wp = g.Wp();
  const int vectors = g.Co / 16;
  for (int64_t b = begin; b < end; ++b) {
    PadImage(x, b, g, scratch, b == begin);
    const float* dyb = dy + b * g.Ho * g.Wo * g.Co;
    for (int u = 0; u < 3; ++u) {
      for (int v = 0; v < 3; ++v) {
        const float* xt = scratch.data() + (u * Wp + v) * g.C;
        float* dkt = dk + static_cast<int64_t>(u * 3 + v) * g.C * g.Co;
        for (int cb = 0; cb < vectors; cb += plan.nv) {
          const auto& tiles = kWTiles[std::min(plan.nv, vectors - cb)];
          int i0 = 0;
          for (int t = 0; t < plan.count; ++t) {
            const int ri = plan.Width(t, g.C);
            tiles[ri - 1](xt + i0, Wp, g.C, g.stride, dyb + 16 * cb, g.Ho, g.Wo, g.Co,
                          dkt + static_cast<int64_t>(i0) * g.Co + 16 * cb);
            i0 += ri;
          }
        }
      }
    }
  }
}

ffi::Error Conv3x3WeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                             ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dk,
                             int64_t stride, int64_t pad_top, int64_t pad_left) {
  Geometry g;
  if (!ReadGeometry(x.dimensions(), dk->dimensions(), dy.dimensions(), stride, pad_top, pad_left,
                    g)) {
    return ffi::Error::InvalidArgument(std::string("posejax_conv3x3_wgrad: ") + kShapes);
  }
  const Plan plan = MakePlan(g.C, g.Co / 16, kMaxRI);
  const int64_t batch = x.dimensions()[0];
  const auto [chunks, per_chunk] = Chunks(pool, batch);
  const int64_t size = 9 * static_cast<int64_t>(g.C) * g.Co;
  // One partial sum per chunk; chunk 0 sums straight into the output.
  std::vector<float> partials(static_cast<size_t>((chunks - 1) * size), 0.0f);
  float* out = dk->typed_data();
  std::fill(out, out + size, 0.0f);
  const float* xs = x.typed_data();
  const float* dys = dy.typed_data();
  ParallelFor(pool, chunks, [&](int64_t c) {
    float* target = c == 0 ? out : partials.data() + (c - 1) * size;
    WeightGradImages(xs, dys, target, c * per_chunk, std::min(batch, (c + 1) * per_chunk), g,
                     plan);
  });
  for (int64_t c = 1; c < chunks; ++c) {
    const float* part = partials.data() + (c - 1) * size;
    for (int64_t n = 0; n < size; ++n) out[n] += part[n];
  }
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(posejax_conv3x3_wgrad, Conv3x3WeightGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

// Whether this CPU can run the kernels (they are compiled for AVX-512F).
extern "C" int posejax_conv3x3_supported() { return __builtin_cpu_supports("avx512f") ? 1 : 0; }
