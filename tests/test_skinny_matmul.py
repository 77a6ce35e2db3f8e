"""The CPU kernel for few-row products (models/skinny_matmul.py): built by the install, equal to XLA's dot,
used exactly where ROW_RANGE says, differentiable, and a model's logits through it equal the plain ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from models import skinny_matmul
from models.skinny_matmul import MIN_WEIGHTS, ROW_RANGE, dense_dot_general, project_rows
from tests.random_models import random_model


def test_the_install_built_the_kernel():
    assert skinny_matmul.available()
    assert skinny_matmul.formulation().startswith("skinny-kernel")


# Odd sizes on purpose: K not a multiple of the vector width, N not a multiple of the column blocks,
# M past the row blocks (and 8, 16, 64: whole row groups), a single output column, an NT product over
# several 1 MiB column chunks (8 x 640 x 1000), an NN one over several row blocks per thread (9 x 2051).
SHAPES = [(1, 640, 1000), (2, 33, 17), (3, 17, 1), (5, 640, 262), (7, 48, 9), (17, 64, 130), (24, 100, 77),
          (9, 2051, 70), (8, 640, 1000), (16, 130, 701), (64, 40, 50), (1, 2051, 70), (1, 6, 20), (4, 37, 2048)]


@pytest.mark.parametrize("layout", ["nt", "nn"])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_the_kernel_equals_a_float64_product(layout, m, k, n):
    rng = np.random.default_rng(m * k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    weights = w if layout == "nt" else np.ascontiguousarray(w.T)
    got = jax.jit(lambda x, w: skinny_matmul._kernel(layout, x, w))(x, weights)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5 * np.abs(want).max())


def _custom_calls(fn, *args) -> str:
    return " ".join(line for line in jax.jit(fn).lower(*args).as_text().splitlines() if "jaxspec_matmul" in line)


@pytest.mark.parametrize("rows", [1, 2, 5, ROW_RANGE["nn"][1], ROW_RANGE["nn"][1] + 1, ROW_RANGE["nt"][1] + 1, 64])
def test_products_take_the_kernel_only_inside_its_row_range_and_past_its_size(rows):
    x = jnp.ones((rows, 32), jnp.float32)
    table = jnp.ones((MIN_WEIGHTS // 32, 32), jnp.float32)
    kernel = jnp.ones((32, MIN_WEIGHTS // 32), jnp.float32)
    dense = lambda x, w: dense_dot_general(x, w, (((1,), (0,)), ((), ())))  # noqa: E731
    for layout, fn, w in (("nt", project_rows, table), ("nn", dense, kernel)):
        low, high = ROW_RANGE[layout]
        assert (f"jaxspec_matmul_{layout}" in _custom_calls(fn, x, w)) == (low <= rows <= high)
        assert _custom_calls(fn, x, w[:-1] if layout == "nt" else w[:, :-1]) == ""  # one weight short


def test_other_dtypes_and_the_xla_switch_take_xlas_dot(monkeypatch):
    x, table = jnp.ones((4, 32)), jnp.ones((MIN_WEIGHTS // 32, 32))
    assert _custom_calls(project_rows, x.astype(jnp.bfloat16), table.astype(jnp.bfloat16)) == ""
    monkeypatch.setenv("JAXSPEC_MATMUL", "xla")
    assert _custom_calls(project_rows, x, table) == ""
    assert skinny_matmul.formulation() == "xla"


def test_a_dense_layer_through_the_kernel_has_xlas_value_and_gradient():
    dense = nn.Dense(MIN_WEIGHTS // 40 + 1, dot_general=dense_dot_general)
    plain = nn.Dense(MIN_WEIGHTS // 40 + 1)
    x = jax.random.normal(jax.random.key(0), (1, 3, 40))
    params = plain.init(jax.random.key(1), x)
    assert "jaxspec_matmul_nn" in _custom_calls(lambda p, x: dense.apply(p, x), params, x)

    def loss(module, p, x):
        return jnp.sum(jnp.sin(module.apply(p, x)))

    np.testing.assert_allclose(dense.apply(params, x), plain.apply(params, x), rtol=1e-6, atol=1e-6)
    got = jax.grad(lambda p, x: loss(dense, p, x), argnums=(0, 1))(params, x)
    want = jax.grad(lambda p, x: loss(plain, p, x), argnums=(0, 1))(params, x)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", [1, 3, 8])  # two rows each: 2 .. 16 rows
def test_a_models_logits_through_the_kernel_equal_xlas(width, monkeypatch):
    """The formulation changes the order of float32 sums only: logits within 1e-5 relative."""
    model, params = random_model(3, 2, 256, 4, 2)  # every projection past MIN_WEIGHTS
    prompts = jnp.asarray(np.random.default_rng(0).integers(0, model.vocab_size, (2, 9)), jnp.int32)
    start = model.start(params, prompts, jnp.array([9, 6]), width)
    tokens = prompts[:, :width]
    positions = start.cache.lengths[:, None] + jnp.arange(width)[None, :]

    def logits():
        return jax.jit(lambda p, t, c: model.forward(p, t, positions, c).logits)(params, tokens, start.cache)

    assert "jaxspec_matmul_nn" in _custom_calls(lambda p, t, c: model.forward(p, t, positions, c).logits, params,
                                                tokens, start.cache)
    fast = logits()
    monkeypatch.setenv("JAXSPEC_MATMUL", "xla")
    plain = logits()
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5 * float(jnp.abs(plain).max()))
