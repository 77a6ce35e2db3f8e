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

constexpr int kLanes = 16;
typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));

inline vec load(const float* p) {
  vec v;
  __builtin_memcpy(&v, p, sizeof(vec));
  return v;
}

inline void store(float* p, vec v) { __builtin_memcpy(p, &v, sizeof(vec)); }

inline vec splat(float s) { return vec{} + s; }

typedef float half_vec __attribute__((vector_size(kLanes / 2 * sizeof(float))));
typedef float quarter_vec __attribute__((vector_size(kLanes / 4 * sizeof(float))));

// Sum of the lanes as a tree of halves: four adds on the critical path instead of fifteen.
inline float hsum(vec v) {
  const half_vec h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                     __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const quarter_vec q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  return (q[0] + q[2]) + (q[1] + q[3]);
}

// NT: kNR weight rows (each K contiguous floats) against kMR input rows; the K loop runs in
// vectors with kMR x kNR accumulators, reduced across lanes once at the end.
template <int kMR, int kNR>
void nt_block(const float* x, const float* w, float* y, int64_t K, int64_t N) {
  vec acc[kMR][kNR] = {};
  const int64_t kv = K - K % kLanes;
  for (int64_t k = 0; k < kv; k += kLanes) {
    vec wv[kNR];
    for (int j = 0; j < kNR; ++j) wv[j] = load(w + j * K + k);
    // The hardware prefetcher does not run far enough ahead of the interleaved row streams to hide
    // memory behind the arithmetic of a few rows: fetch the next block's rows.
    for (int j = 0; j < kNR; ++j) __builtin_prefetch(w + (kNR + j) * K + k);
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

// All M input rows against kNR weight rows, kMR rows at a time (kMR x kNR accumulators and kNR
// weight vectors fit the 32 vector registers of AVX-512 at kMR = 3, kNR = 8).
template <int kMR, int kNR>
void nt_rows(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N) {
  if constexpr (kMR > 0) {
    int64_t m = 0;
    for (; m + kMR <= M; m += kMR) nt_block<kMR, kNR>(x + m * K, w, y + m * N, K, N);
    if (m < M) nt_rows<kMR - 1, kNR>(x + m * K, w, y + m * N, M - m, K, N);
  }
}

// Output columns [n0, n1) of the NT product: eight weight rows at a time, every input row applied
// to them while they are in L1.
void nt_columns(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t n0,
                int64_t n1) {
  int64_t n = n0;
  for (; n + 8 <= n1; n += 8) nt_rows<3, 8>(x, w + n * K, y + n, M, K, N);
  for (; n < n1; ++n) nt_rows<3, 1>(x, w + n * K, y + n, M, K, N);
}

// NN: a panel of kNV vectors of output columns for kMR input rows; each step k reads one row
// segment of the weight panel and broadcasts x[i, k].
template <int kMR, int kNV>
void nn_block(const float* x, const float* w, float* y, int64_t K, int64_t N) {
  vec acc[kMR][kNV] = {};
  for (int64_t k = 0; k < K; ++k) {
    vec wv[kNV];
    for (int j = 0; j < kNV; ++j) wv[j] = load(w + k * N + j * kLanes);
    for (int j = 0; j < kNV; ++j) __builtin_prefetch(w + (k + 8) * N + j * kLanes);
    for (int i = 0; i < kMR; ++i) {
      const vec xs = splat(x[i * K + k]);
      for (int j = 0; j < kNV; ++j) acc[i][j] += xs * wv[j];
    }
  }
  for (int i = 0; i < kMR; ++i)
    for (int j = 0; j < kNV; ++j) store(y + i * N + j * kLanes, acc[i][j]);
}

template <int kNV>
void nn_rows(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) nn_block<4, kNV>(x + m * K, w, y + m * N, K, N);
  switch (M - m) {
    case 3: nn_block<3, kNV>(x + m * K, w, y + m * N, K, N); break;
    case 2: nn_block<2, kNV>(x + m * K, w, y + m * N, K, N); break;
    case 1: nn_block<1, kNV>(x + m * K, w, y + m * N, K, N); break;
    default: break;
  }
}

void nn_columns(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t n0,
                int64_t n1) {
  int64_t n = n0;
  for (; n + 4 * kLanes <= n1; n += 4 * kLanes) nn_rows<4>(x, w + n, y + n, M, K, N);
  for (; n + kLanes <= n1; n += kLanes) nn_rows<1>(x, w + n, y + n, M, K, N);
  for (; n < n1; ++n) {
    for (int64_t i = 0; i < M; ++i) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += x[i * K + k] * w[k * N + n];
      y[i * N + n] = s;
    }
  }
}

using ColumnFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t);

// Work shared between the calling thread and the pool's tasks. A task that starts after the
// work is done finds no chunk left and returns; the shared_ptr keeps the state alive for it.
struct Work {
  ColumnFn fn;
  const float* x;
  const float* w;
  float* y;
  int64_t M, K, N, chunk, chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void run() {
    int64_t c;
    while ((c = next.fetch_add(1, std::memory_order_relaxed)) < chunks) {
      const int64_t n0 = c * chunk;
      fn(x, w, y, M, K, N, n0, std::min(N, n0 + chunk));
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// Columns per chunk: about 256 KiB of weights, a multiple of the kernels' column blocks.
int64_t chunk_columns(int64_t K, int64_t block) {
  const int64_t cols = std::max<int64_t>(block, (int64_t{1} << 16) / std::max<int64_t>(K, 1));
  return (cols + block - 1) / block * block;
}

ffi::Error matmul(ColumnFn fn, int64_t block, bool nt, ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                  ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2) return ffi::Error::InvalidArgument("matmul: x and w must be 2-D");
  const int64_t M = xd[0], K = xd[1];
  const int64_t N = nt ? wd[0] : wd[1];
  if ((nt ? wd[1] : wd[0]) != K) return ffi::Error::InvalidArgument("matmul: inner dimensions differ");
  auto work = std::make_shared<Work>();
  work->fn = fn;
  work->x = x.typed_data();
  work->w = w.typed_data();
  work->y = y->typed_data();
  work->M = M;
  work->K = K;
  work->N = N;
  work->chunk = chunk_columns(K, block);
  work->chunks = (N + work->chunk - 1) / work->chunk;
  // The calling thread works too: one helper fewer than the pool's threads keeps one runner per core.
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, work->chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work] { work->run(); });
  work->run();
  while (work->done.load(std::memory_order_acquire) < work->chunks) std::this_thread::yield();
  return ffi::Error::Success();
}

ffi::Error matmul_nt(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                     ffi::ResultBuffer<ffi::F32> y) {
  return matmul(nt_columns, 8, true, pool, x, w, y);
}

ffi::Error matmul_nn(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                     ffi::ResultBuffer<ffi::F32> y) {
  return matmul(nn_columns, 4 * kLanes, false, pool, x, w, y);
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
      PyModule_AddObject(module, "matmul_nn", nn) < 0) {
    Py_XDECREF(nt);
    Py_XDECREF(nn);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
