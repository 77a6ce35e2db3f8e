"""Fixtures shared across test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train_data import make_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A tiny packed dataset (BPE tokenizer, train and eval splits) built from a generated corpus."""
    return make_dataset(tmp_path_factory.mktemp("train_data"))
