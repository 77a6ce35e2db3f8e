"""Few-row float32 products on the CPU through a kernel that reads each weight once (models/csrc).

A decoding step multiplies B x T rows by every weight matrix; verifying T drafted tokens should cost
about what one token costs while the product is bound by reading the weights. XLA's CPU dot does
not behave so: it packs the weights like a large GEMM, so two rows through Gemma 3 270M's head cost
2.1x one row. The kernel in models/csrc/skinny_matmul.cc streams the weights once and applies them
to every row; `project_rows` and `dense_dot_general` route a product to it when it is measured to
be faster (ROW_RANGE) and fall back to XLA everywhere else: other backends, several devices (a
custom call has no sharding rule), other dtypes, the kernel not built.

JAXSPEC_MATMUL=xla turns the kernel off (read when a function is traced), for comparisons.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

# Rows (batch x tokens) for which the kernel beats XLA's dot, per weight layout, measured on Gemma 3
# 270M's shapes in float32 on a 2-core AVX-512 CPU (AMD EPYC), weights streamed from memory
# (`python -m bench.matmul_bandwidth`, kernel v3): the tied head [vocab, hidden] at 1-64 rows (8 rows
# 21 against XLA's 11 GB/s, 16 rows 14 against 8, 33 rows 7.5 against 6.5, 64 rows 4.5 against
# 4.4; one row level, 29 against 31 GB/s here, medians of 6, and 25 against 21 on an Intel Xeon
# with v2). The layers' [K, N] kernels at 1-17 rows (16 rows 12-14 against 9-11 GB/s); at 24 rows
# XLA's packed GEMM reads the MLP's [640, 2048] faster (7.5 against 6.6 GB/s) and [2048, 640]
# slower (8.3 against 10.5).
WIDE_ROW_RANGE = {"nt": (1, 64), "nn": (1, 17)}
# Built for AVX2 (no AVX-512: vectors of 8 floats, 16 registers, smaller tiles), on a 2-core AMD EPYC
# with AVX2, weights streamed from memory (`python -m bench.matmul_bandwidth`, kernel v6): the layers'
# kernels read faster than XLA's dot at 1-17 rows (1 row 14-21 against 9-19 GB/s; the one exception,
# [640, 2048] at one row, 17.2 against 18.8), the head at 2-9 rows (18.2 against 7.4 GB/s at 2, 9.9
# against 7.8 at 9) but not at one row (17.7 against 19.6) nor 17 (5.0 against 6.9).
NARROW_ROW_RANGE = {"nt": (2, 9), "nn": (1, 17)}


def _lanes() -> int | None:
    """Floats per vector the extension was built with (16: AVX-512, 8: AVX2 or less), None unbuilt."""
    try:
        from models import _skinny_matmul
    except ImportError:
        return None
    return _skinny_matmul.LANES


ROW_RANGE = WIDE_ROW_RANGE if _lanes() == 16 else NARROW_ROW_RANGE
# Below this many weights (128 KiB of float32) XLA's dot is faster: the weights sit in cache, and the
# kernel's hand-off to a second thread costs more than the product (a 64 x 176 Dense: 10 against 14
# GB/s for one row). The tests' tiny models stay on XLA's dot.
MIN_WEIGHTS = 1 << 15
# Part of the formulation, so cost curves measured on disk with an earlier kernel are measured again.
# 2: the [K, N] kernel reads blocks of whole weight rows (it read column panels); one row and past
# MIN_WEIGHTS only. 3: weights kept in registers and fetched ahead into L2 (1.2-1.5x at 2-17 rows),
# and the row ranges above. 4: the [K, N] kernel streams whole weight rows for 1-5 rows (10-20% less
# time over the 100M model's products). 5: the [N, K] kernel spreads its fetches ahead over every
# group of input rows (Gemma 3 270M's head at 9 rows 31 -> 23-25 ms, at 17 rows 46 -> 40). 6: builds
# for AVX2 with its own vector and tile sizes (it failed to build there) and NARROW_ROW_RANGE.
KERNEL_VERSION = 6


@functools.cache
def _kernels() -> bool:
    """Registers the FFI targets once; False where the extension was not built."""
    try:
        from models import _skinny_matmul
    except ImportError:
        return False
    jax.ffi.register_ffi_target("jaxspec_matmul_nt", _skinny_matmul.matmul_nt, platform="cpu")
    jax.ffi.register_ffi_target("jaxspec_matmul_nn", _skinny_matmul.matmul_nn, platform="cpu")
    return True


def available() -> bool:
    return _kernels()


def formulation() -> str:
    """What a CPU product of a few rows runs as now: part of every speed measurement's key."""
    if os.environ.get("JAXSPEC_MATMUL", "auto") == "xla" or not _kernels():
        return "xla"
    ranges = ",".join(f"{k}:{lo}-{hi}" for k, (lo, hi) in sorted(ROW_RANGE.items()))
    return f"skinny-kernel v{KERNEL_VERSION} {ranges} min{MIN_WEIGHTS}"


def _use_kernel(layout: str, rows: int, x: jax.Array, w: jax.Array) -> bool:
    low, high = ROW_RANGE[layout]
    return (
        low <= rows <= high
        and w.size >= MIN_WEIGHTS
        and x.dtype == jnp.float32
        and w.dtype == jnp.float32
        and os.environ.get("JAXSPEC_MATMUL", "auto") != "xla"
        and jax.default_backend() == "cpu"
        and jax.device_count() == 1
        and _kernels()
    )


def _xla(layout: str, x: jax.Array, w: jax.Array) -> jax.Array:
    return x @ w.T if layout == "nt" else x @ w


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kernel(layout: str, x: jax.Array, w: jax.Array) -> jax.Array:
    if not _kernels():
        raise RuntimeError("models._skinny_matmul was not built (no C++ compiler at install?)")
    n = w.shape[0] if layout == "nt" else w.shape[1]
    out = jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32)
    return jax.ffi.ffi_call(f"jaxspec_matmul_{layout}", out, vmap_method="sequential")(x, w)


def _kernel_fwd(layout, x, w):
    return _kernel(layout, x, w), (x, w)


def _kernel_bwd(layout, residuals, g):
    # Training runs many rows through XLA anyway; the gradient of a few-row product is XLA's.
    x, w = residuals
    return jax.vjp(functools.partial(_xla, layout), x, w)[1](g)


_kernel.defvjp(_kernel_fwd, _kernel_bwd)


def _kernel_rows(layout: str, x: jax.Array, w: jax.Array) -> jax.Array | None:
    """x [..., K] with w [N, K] (nt) or [K, N] (nn) -> [..., N] through the kernel, or None where
    ROW_RANGE and the backend say XLA's dot."""
    x2 = x.reshape(-1, x.shape[-1])
    if not _use_kernel(layout, x2.shape[0], x2, w):
        return None
    return _kernel(layout, x2, w).reshape(*x.shape[:-1], -1)


def project_rows(x: jax.Array, rows: jax.Array) -> jax.Array:
    """x [..., D] against rows [N, D] (an embedding table or a tied head): [..., N]."""
    out = _kernel_rows("nt", x, rows)
    return jnp.einsum("...d,nd->...n", x, rows) if out is None else out


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """A drop-in for lax.dot_general in nn.Dense(dot_general=...): the kernel for Dense's own
    contraction (last axis of the input with the kernel's first) where it is faster, else exactly
    the lax.dot_general call Dense would have made."""
    (lc, rc), (lb, rb) = dimension_numbers
    dense = tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb and rhs.ndim == 2
    if dense and preferred_element_type in (None, jnp.float32):
        out = _kernel_rows("nn", lhs, rhs)
        if out is not None:
            return out
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type, **kwargs)
