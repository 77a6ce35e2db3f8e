"""Fixtures shared across test modules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.xla_env import with_test_flags

# Before anything imports jax: XLA reads its flags once, when the backend starts.
os.environ["XLA_FLAGS"] = with_test_flags(os.environ.get("XLA_FLAGS", ""))

from tests.test_train_data import SCHEDULE, TINY_MODEL, make_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A tiny packed dataset (BPE tokenizer, train and eval splits) built from a generated corpus."""
    return make_dataset(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="module")
def target_dir(data_dir, tmp_path_factory) -> Path:
    """A tiny trained target (a Hugging Face directory) to train heads and exit adapters on."""
    from train.cli import main

    run = tmp_path_factory.mktemp("target") / "run"
    argv = ["lm", "--data", str(data_dir), "--out", str(run), *TINY_MODEL, *SCHEDULE, "--lr", "1e-2", "--steps", "60"]
    assert main(argv) == 0
    return run / "hf"


@pytest.fixture(scope="module")
def heads_run(data_dir, target_dir, tmp_path_factory) -> Path:
    """Two Medusa heads trained on target_dir."""
    from train.cli import main

    run = tmp_path_factory.mktemp("heads") / "run"
    argv = ["heads", "--model", str(target_dir), "--data", str(data_dir), "--out", str(run), "--num-heads", "2",
            *SCHEDULE, "--lr", "1e-2", "--steps", "60", "--eval-every", "30"]
    assert main(argv) == 0
    return run


@pytest.fixture(scope="module", autouse=True)
def drop_compiled_programs() -> Iterator[None]:
    """The whole suite runs in one process: each module's compiled programs are dropped at its end, so
    hundreds of XLA executables do not pile up (a bench that kept dozens of Gemma programs had LLVM fail
    to allocate memory)."""
    yield
    import jax

    jax.clear_caches()


@pytest.fixture(scope="session", autouse=True)
def jaxspec_cache(tmp_path_factory) -> Iterator[Path]:
    """Everything jaxspec caches on disk (the reference model, measured forward costs) goes to a directory
    of the run's own, never the user's ~/.cache."""
    before = os.environ.get("JAXSPEC_CACHE")
    path = tmp_path_factory.mktemp("jaxspec_cache")
    os.environ["JAXSPEC_CACHE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("JAXSPEC_CACHE")
    else:
        os.environ["JAXSPEC_CACHE"] = before


@pytest.fixture(scope="session")
def reference_gguf(jaxspec_cache) -> Path:
    """Gemma 3 270M's .gguf, assembled from its PyPI package once per run into the run's cache.

    The package is part of the test extra: if it is missing, this fails rather than skips.
    """
    from jaxspec import reference_model

    return reference_model.gguf_path()


@pytest.fixture(scope="session")
def reference_dir(reference_gguf) -> Path:
    """The reference model converted to a Hugging Face directory once per run (jaxspec convert's path)."""
    from jaxspec import reference_model

    return reference_model.converted_dir()


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """The environment for a module's training subprocesses: they compile the same programs, so a shared
    persistent compilation cache compiles each once."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
