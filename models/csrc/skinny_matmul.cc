// Skinny float32 matrix products for the CPU backend, called from JAX through the XLA FFI.
//
// A decoding step multiplies a few rows (batch x window tokens) by every weight matrix of the
// model. Library GEMMs pack the weight matrix into panels first, so their cost grows with the
// number of rows from the first extra row on; at a few rows the product is bound by reading the
// weights, and the cheapest schedule reads each weight once from memory and applies it to every
// row while it is in registers or L1. These kernels do that, for both weight layouts the models
// hold:
//   jaxspec_matmul_nt: y[m, n] = sum_k x[m, k] * w[n, k]   (w [N, K]: embedding rows, a tied head)
//   jaxspec_matmul_nn: y[m, n] = sum_k x[m, k] * w[k, n]   (w [K, N]: a Flax Dense kernel)
// The output columns are cut into chunks that the calling thread and XLA's intra-op pool take from
// one atomic counter, so nothing waits on a task that no thread is free to run.
//
// Written with GCC vector extensions, which lower to AVX-512, AVX2 or SSE as the build machine
// allows (the package builds on the machine it runs on).

#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Vectors and tiles are sized to the register file: AVX-512 has 32 registers of 16 floats, AVX2 16
// of 8. Built for AVX2 with AVX-512's sizes, each vector took two registers and every tile spilled:
// Gemma 3 270M's head at one row took 155 ms against XLA's 34.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
constexpr bool kWideRegisters = kLanes == 16;
typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));

inline vec load(const float* p) {
  vec v;
  __builtin_memcpy(&v, p, sizeof(vec));
  return v;
}

inline void store(float* p, vec v) { __builtin_memcpy(p, &v, sizeof(vec)); }

inline vec splat(float s) { return vec{} + s; }

typedef float vec8 __attribute__((vector_size(8 * sizeof(float))));
typedef float vec4 __attribute__((vector_size(4 * sizeof(float))));

// Sum of the lanes as a tree of halves: four adds on the critical path instead of fifteen.
inline float hsum(vec v) {
  vec8 h;
  if constexpr (kWideRegisters) {
    h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  } else {
    __builtin_memcpy(&h, &v, sizeof(h));
  }
  const vec4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  return (q[0] + q[2]) + (q[1] + q[3]);
}

// Keeps a value in a register: GCC otherwise folds a vector loaded once into every FMA that uses
// it as a memory operand, so each weight vector was loaded once per input row and the load ports,
// not the FMA units, bounded the loop (in-cache, 16 rows: 66 against 84 GFLOP/s on one core).
inline void in_register(vec& v) {
#if defined(__x86_64__) && defined(__AVX512F__)
  __asm__("" : "+v"(v));
#elif defined(__x86_64__) && defined(__AVX__)
  __asm__("" : "+x"(v));
#else
  (void)v;
#endif
}

// How far ahead the row groups fetch weight rows, in blocks of kNR rows, and into L2 only
// (prefetcht1). With in_register, against every row group fetching the next block into L1 (Gemma 3
// 270M's head, two cores, weights from memory, the two in turn): 8 rows 18.8 -> 21.9 GB/s, 16 rows
// 11.8 -> 14.9.
constexpr int kNTPrefetchBlocks = 2;

// NT: kNR weight rows (each K contiguous floats) against kMR input rows; the K loop runs in
// vectors with kMR x kNR accumulators, reduced across lanes once at the end. This is group g of the
// G groups of input rows that read the same weight rows, the first from L2 and the rest from L1.
template <int kMR, int kNR>
void nt_block(const float* x, const float* w, float* y, int64_t K, int64_t N, int64_t g, int64_t G) {
  vec acc[kMR][kNR] = {};
  const int64_t kv = K - K % kLanes;
  const int64_t lines = (K + kLanes - 1) / kLanes;  // vectors per weight row: cache lines with AVX-512
  const float* ahead = w + kNTPrefetchBlocks * kNR * K;
  for (int64_t k = 0; k < kv; k += kLanes) {
    vec wv[kNR];
    for (int j = 0; j < kNR; ++j) {
      wv[j] = load(w + j * K + k);
      // One input row uses each weight vector once: AVX2's 16 registers then go to accumulators.
      if constexpr (kMR > 1 || kWideRegisters) in_register(wv[j]);
    }
    // The hardware prefetcher does not run far enough ahead of the interleaved row streams to hide
    // memory behind the arithmetic of a few rows. The kNR x lines lines of the block ahead are
    // spread evenly over every group's steps: issued all in the first group (one line per row per
    // step), they reached memory in bursts, and the head at 17 rows took 45 ms against 39 spread.
    const int64_t step = g * lines + k / kLanes;
    for (int64_t l = step * kNR / G; l < (step + 1) * kNR / G; ++l)
      __builtin_prefetch(ahead + (l % kNR) * K + (l / kNR) * kLanes, 0, 2);
    for (int i = 0; i < kMR; ++i) {
      const vec xv = load(x + i * K + k);
      for (int j = 0; j < kNR; ++j) acc[i][j] += xv * wv[j];
    }
  }
  for (int i = 0; i < kMR; ++i) {
    for (int j = 0; j < kNR; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t k = kv; k < K; ++k) s += x[i * K + k] * w[j * K + k];
      y[i * N + j] = s;
    }
  }
}

// All M input rows against kNR weight rows, kMR rows at a time, as groups g, g + 1, ... of G. kMR x
// kNR accumulators, kNR weight vectors and one input vector must fit AVX-512's 32 registers: 3 x 7
// takes 29 (3 x 8 spilled).
template <int kMR, int kNR>
void nt_rows(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t g, int64_t G) {
  if constexpr (kMR > 0) {
    if (M < kMR) return nt_rows<kMR - 1, kNR>(x, w, y, M, K, N, g, G);
    int64_t m = 0;
    for (; m + kMR <= M; m += kMR) nt_block<kMR, kNR>(x + m * K, w, y + m * N, K, N, g++, G);
    if (m < M) nt_rows<kMR - 1, kNR>(x + m * K, w, y + m * N, M - m, K, N, g, G);
  }
}

// With AVX2's 16 registers: 2 x 4 accumulators, 4 weight vectors and an input vector take 13.
constexpr int kNTRows = kWideRegisters ? 3 : 2;
constexpr int kNTColumns = kWideRegisters ? 7 : 4;
// One input row has no reuse to keep in registers; more weight rows per block put more of the
// stream in flight: the head at one row read 22-26 GB/s in blocks of 7 rows, 30-40 in blocks of 12
// (harness, the two in turn); AVX2 holds them without keeping the weight vectors in registers.
constexpr int kNTColumnsOneRow = 12;

template <int kMR, int kNR>
void nt_sweep(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  const int64_t groups = (M + kMR - 1) / kMR;
  int64_t n = n0;
  for (; n + kNR <= n1; n += kNR) nt_rows<kMR, kNR>(x, w + n * K, y + n, M, K, N, 0, groups);
  for (; n < n1; ++n) nt_rows<kMR, 1>(x, w + n * K, y + n, M, K, N, 0, groups);
}

// Output columns [n0, n1) of the NT product: a block of weight rows at a time, every input row
// applied to them while they are in L1.
void nt_columns(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t n0,
                int64_t n1) {
  if (M == 1)
    nt_sweep<1, kNTColumnsOneRow>(x, w, y, M, K, N, n0, n1);
  else
    nt_sweep<kNTRows, kNTColumns>(x, w, y, M, K, N, n0, n1);
}

// NN: y[kMR rows, kNV vectors of columns] (+)= x[kMR rows, kb] * w[kb rows, the same columns]; each
// step k reads one row segment of w and broadcasts x[i, k]. The accumulators start at zero on the
// first block of rows and from y after it.
template <int kMR, int kNV>
void nn_tile(const float* x, const float* w, float* y, int64_t K, int64_t N, int64_t kb, bool first) {
  vec acc[kMR][kNV];
  for (int i = 0; i < kMR; ++i)
    for (int j = 0; j < kNV; ++j) acc[i][j] = first ? vec{} : load(y + i * N + j * kLanes);
  for (int64_t k = 0; k < kb; ++k) {
    vec wv[kNV];
    for (int j = 0; j < kNV; ++j) wv[j] = load(w + k * N + j * kLanes);
    for (int i = 0; i < kMR; ++i) {
      const vec xs = splat(x[i * K + k]);
      for (int j = 0; j < kNV; ++j) acc[i][j] += xs * wv[j];
    }
  }
  for (int i = 0; i < kMR; ++i)
    for (int j = 0; j < kNV; ++j) store(y + i * N + j * kLanes, acc[i][j]);
}

// Every input row against one tile of columns of a block of kb weight rows, kMR rows at a time
// (8 x 3 accumulators, 3 weight vectors and a broadcast fill 28 of AVX-512's 32 registers; 8 and
// 16 rows, the common batch x window counts, need no smaller tile): the tile is read from memory
// for the first group of rows and from L1 for the rest.
template <int kMR, int kNV>
void nn_tile_rows(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t kb,
                  bool first) {
  if constexpr (kMR > 0) {
    int64_t m = 0;
    for (; m + kMR <= M; m += kMR) nn_tile<kMR, kNV>(x + m * K, w, y + m * N, K, N, kb, first);
    if (m < M) nn_tile_rows<kMR - 1, kNV>(x + m * K, w, y + m * N, M - m, K, N, kb, first);
  }
}

// AVX2: 4 x 2 accumulators, 2 weight vectors and a broadcast take 11 of 16 registers.
constexpr int kNNRows = kWideRegisters ? 8 : 4;
constexpr int kNNVectors = kWideRegisters ? 3 : 2;
// Weight rows per block: the block's rows are read side by side as the column tiles advance, each
// a contiguous stream, and the partial sums go through L1 once per block. Each tile fetches the
// block's rows two tiles ahead into L2. Measured on a [640, 2048] kernel, two cores, weights from
// memory, against 32-row blocks of six-row tiles without fetching ahead (the two in turn): 1 row
// 20.5 -> 25.9 GB/s, 8 rows 14.0 -> 20.6, 16 rows 10.5 -> 12.0.
constexpr int64_t kNNBlockRows = 16;
constexpr int kNNPrefetchTiles = 2;

// Weight rows [k0, k1) of the NN product into y (row stride N): the rows are read once, front to
// back, in blocks of kNNBlockRows. A [K, N] matrix read in column panels instead jumps a whole row
// (N floats) at every step, which the prefetchers follow more slowly than contiguous reads: on Gemma
// 3 270M's layer shapes, one row, 18-22 GB/s in column panels against 23-29 in row blocks.
void nn_rows(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t k0, int64_t k1) {
  constexpr int64_t tile = kNNVectors * kLanes;
  for (int64_t kb0 = k0; kb0 < k1; kb0 += kNNBlockRows) {
    const int64_t kb = std::min(kNNBlockRows, k1 - kb0);
    const bool first = kb0 == k0;
    const float* xb = x + kb0;
    const float* wb = w + kb0 * N;
    int64_t n = 0;
    for (; n + tile <= N; n += tile) {
      // Past the row's end this fetches the next row's start, which a later block reads anyway;
      // a prefetch never faults.
      for (int64_t k = 0; k < kb; ++k)
        for (int j = 0; j < kNNVectors; ++j) __builtin_prefetch(wb + k * N + n + kNNPrefetchTiles * tile + j * kLanes, 0, 2);
      nn_tile_rows<kNNRows, kNNVectors>(xb, wb + n, y + n, M, K, N, kb, first);
    }
    for (; n + kLanes <= N; n += kLanes) nn_tile_rows<kNNRows, 1>(xb, wb + n, y + n, M, K, N, kb, first);
    for (; n < N; ++n) {
      for (int64_t i = 0; i < M; ++i) {
        float s = first ? 0.0f : y[i * N + n];
        for (int64_t k = 0; k < kb; ++k) s += xb[i * K + k] * wb[k * N + n];
        y[i * N + n] = s;
      }
    }
  }
}

// A few rows whose partial sums fit L1 need no column tiles: weight rows [k0, k1) are one
// contiguous region, read front to back kNNStreamRows rows at a time against whole rows of partial
// sums, so memory sees a few neighbouring streams instead of a block's sixteen. Each step fetches
// the next rows' same columns, kNNStreamAhead floats further on, into L2. Against 16-row blocks of
// column tiles (harness, two cores, weights from memory, the two in turn): one row [768, 768] 23-28
// -> 29-32 GB/s, [768, 2048] 26-31 -> 31-40, [2048, 768] 24-28 -> 29-35; two rows [640, 2048]
// 23 -> 29, [2048, 640] 21 -> 27; five rows [2048, 640] 22 -> 34.
constexpr int kNNStreamRows = 4;
constexpr int64_t kNNStreamAhead = 256;
// Input rows the stream takes: kM x kNNStreamRows broadcasts, the weight vectors and an accumulator
// fit AVX-512's 32 registers up to 5 rows (AVX2's 16 up to 2); past one row, only while the partial
// sums fit a 32 KiB L1.
constexpr int kNNStreamMaxRows = kWideRegisters ? 5 : 2;
constexpr int64_t kNNStreamMaxSums = 8192;

template <int kM, int kR>
void nn_stream_rows(const float* x, const float* w, float* y, int64_t K, int64_t N, int64_t k, bool first) {
  const float* wk = w + k * N;
  vec xs[kM][kR];
  for (int i = 0; i < kM; ++i)
    for (int r = 0; r < kR; ++r) xs[i][r] = splat(x[i * K + k + r]);
  int64_t n = 0;
  for (; n + kLanes <= N; n += kLanes) {
    for (int r = 0; r < kR; ++r) __builtin_prefetch(wk + (kR + r) * N + n + kNNStreamAhead, 0, 2);
    vec wv[kR];
    for (int r = 0; r < kR; ++r) {
      wv[r] = load(wk + r * N + n);
      in_register(wv[r]);
    }
    for (int i = 0; i < kM; ++i) {
      vec acc = first ? vec{} : load(y + i * N + n);
      for (int r = 0; r < kR; ++r) acc += xs[i][r] * wv[r];
      store(y + i * N + n, acc);
    }
  }
  for (; n < N; ++n) {
    for (int i = 0; i < kM; ++i) {
      float s = first ? 0.0f : y[i * N + n];
      for (int r = 0; r < kR; ++r) s += x[i * K + k + r] * wk[r * N + n];
      y[i * N + n] = s;
    }
  }
}

template <int kM>
void nn_stream(const float* x, const float* w, float* y, int64_t /*M*/, int64_t K, int64_t N, int64_t k0, int64_t k1) {
  int64_t k = k0;
  for (; k + kNNStreamRows <= k1; k += kNNStreamRows) nn_stream_rows<kM, kNNStreamRows>(x, w, y, K, N, k, k == k0);
  for (; k < k1; ++k) nn_stream_rows<kM, 1>(x, w, y, K, N, k, k == k0);
}

// A share of a product: columns [lo, hi) of y (NT), or the partial sums of weight rows [lo, hi) (NN).
using RangeFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t);

// Work shared between the calling thread and the pool's tasks. A task that starts after the
// work is done finds no chunk left and returns; the shared_ptr keeps the state alive for it.
// Chunks split the columns (each writes its own part of y) or, with `partials`, the weight rows:
// chunk 0 sums into y, chunk c > 0 into partials[c - 1], and the caller adds them up at the end.
struct Work {
  RangeFn fn;
  const float* x;
  const float* w;
  float* y;
  int64_t M, K, N, extent, chunk, chunks;
  std::unique_ptr<float[]> partials;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void run() {
    int64_t c;
    while ((c = next.fetch_add(1, std::memory_order_relaxed)) < chunks) {
      const int64_t lo = c * chunk;
      float* out = (partials && c > 0) ? partials.get() + (c - 1) * M * N : y;
      fn(x, w, out, M, K, N, lo, std::min(extent, lo + chunk));
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// Columns per NT chunk: about 1 MiB of weights (a chunk's first blocks are not fetched ahead; at 256
// KiB the head read 18.7 GB/s at 8 rows, at 1 MiB 21.2), a multiple of
// the kernel's column blocks (of either width).
int64_t chunk_columns(int64_t K, int64_t block) {
  const int64_t cols = std::max<int64_t>(block, (int64_t{1} << 18) / std::max<int64_t>(K, 1));
  return (cols + block - 1) / block * block;
}

ffi::Error matmul(bool nt, ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                  ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2) return ffi::Error::InvalidArgument("matmul: x and w must be 2-D");
  const int64_t M = xd[0], K = xd[1];
  const int64_t N = nt ? wd[0] : wd[1];
  if ((nt ? wd[1] : wd[0]) != K) return ffi::Error::InvalidArgument("matmul: inner dimensions differ");
  auto work = std::make_shared<Work>();
  work->x = x.typed_data();
  work->w = w.typed_data();
  work->y = y->typed_data();
  work->M = M;
  work->K = K;
  work->N = N;
  const int64_t runners = std::max<int64_t>(1, pool.num_threads());
  if (nt) {
    work->fn = nt_columns;
    work->extent = N;
    work->chunk = chunk_columns(K, kNTColumns * kNTColumnsOneRow);
  } else {
    // One block of weight rows per runner; each runner's partial sums are M x N floats, which the
    // caller adds up once.
    static constexpr RangeFn kStream[] = {nn_stream<1>, nn_stream<2>, nn_stream<3>, nn_stream<4>, nn_stream<5>};
    static_assert(kNNStreamMaxRows <= 5, "a stream function per row count");
    const bool stream = M == 1 || (M <= kNNStreamMaxRows && M * N <= kNNStreamMaxSums);
    work->fn = stream ? kStream[M - 1] : nn_rows;
    work->extent = K;
    const int64_t per_runner = (K + runners - 1) / runners;
    work->chunk = std::max<int64_t>(kNNBlockRows, (per_runner + kNNBlockRows - 1) / kNNBlockRows * kNNBlockRows);
  }
  work->chunks = (work->extent + work->chunk - 1) / work->chunk;
  if (!nt && work->chunks > 1) work->partials.reset(new float[(work->chunks - 1) * M * N]);
  // The calling thread works too: one helper fewer than the pool's threads keeps one runner per core.
  const int64_t helpers = std::min<int64_t>(runners - 1, work->chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work] { work->run(); });
  work->run();
  while (work->done.load(std::memory_order_acquire) < work->chunks) std::this_thread::yield();
  if (work->partials) {
    float* out = work->y;
    for (int64_t c = 1; c < work->chunks; ++c) {
      const float* part = work->partials.get() + (c - 1) * M * N;
      for (int64_t i = 0; i < M * N; ++i) out[i] += part[i];
    }
  }
  return ffi::Error::Success();
}

ffi::Error matmul_nt(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                     ffi::ResultBuffer<ffi::F32> y) {
  return matmul(true, pool, x, w, y);
}

ffi::Error matmul_nn(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                     ffi::ResultBuffer<ffi::F32> y) {
  return matmul(false, pool, x, w, y);
}

}  // namespace

// Both kernels take the same arguments: the pool, x, w, and the result.
static auto MatmulBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxspecMatmulNT, matmul_nt, MatmulBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxspecMatmulNN, matmul_nn, MatmulBinding());

// A Python module that hands the two handlers to jax.ffi.register_ffi_target as capsules.
static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_skinny_matmul", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__skinny_matmul() {
  PyObject* module = PyModule_Create(&kModule);
  if (module == nullptr) return nullptr;
  PyObject* nt = PyCapsule_New(reinterpret_cast<void*>(&JaxspecMatmulNT), nullptr, nullptr);
  PyObject* nn = PyCapsule_New(reinterpret_cast<void*>(&JaxspecMatmulNN), nullptr, nullptr);
  if (nt == nullptr || nn == nullptr || PyModule_AddObject(module, "matmul_nt", nt) < 0 ||
      PyModule_AddObject(module, "matmul_nn", nn) < 0 || PyModule_AddIntConstant(module, "LANES", kLanes) < 0) {
    Py_XDECREF(nt);
    Py_XDECREF(nn);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
