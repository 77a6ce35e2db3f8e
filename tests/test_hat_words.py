"""HAT's word splitter (models/hat_words.py): hand-made cases, the join property, and the batched JAX scan
and per-byte step agreeing with the pure function."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.hat_words import EOS, scan_words, split_words

CASES = [
    ("Hello, world!", ["Hello,", " world!"]),
    ("camelCaseWord HTTPServer", ["camel", "Case", "Word", " HTTPServer"]),
    ("wait...what?!", ["wait...", "what?!"]),
    ("don't stop 3.14 e.g. x_y", ["don't", " stop", " 3.14", " e.g.", " x_y"]),
    ("a   b\n\n    return", ["a", "   b", "\n\n    return"]),
    ("f(x)=[1,2]", ["f(", "x)=[", "1,", "2]"]),
    (" naïve café Ωμέγα", [" naïve", " café", " Ωμέγα"]),
    ("日本語 です", ["日", "本", "語", " で", "す"]),
    ("emoji 🙂 ok", ["emoji", " 🙂", " ok"]),
]


@pytest.mark.parametrize("text,words", CASES, ids=[c[0] for c in CASES])
def test_hand_made_cases(text, words):
    assert split_words(text.encode()) == [w.encode() for w in words]


def test_long_words_are_cut_at_the_cap_never_dropped():
    word = "x" * 23
    assert split_words(f" {word}!".encode(), max_word_bytes=10) == [b" xxxxxxxxx", b"x" * 10, b"xxxx!"]
    # A cut may fall inside a character: the bytes are kept, in order.
    text = "é" * 7
    assert b"".join(split_words(text.encode(), max_word_bytes=5)) == text.encode()
    assert [len(w) for w in split_words(text.encode(), max_word_bytes=5)] == [5, 5, 4]


def test_invalid_utf8_and_end_of_text():
    assert split_words(b"ab\xff\xfecd") == [b"ab\xff\xfe", b"cd"]
    assert split_words(b"\x80\x80 x") == [b"\x80\x80", b" x"]
    ids = list(b"end.") + [EOS] + list(b"Next")
    starts = np.asarray(scan_words(jnp.asarray([ids]), 100)[0][0])
    assert np.flatnonzero(starts).tolist() == [0, 4, 5]  # the special stands alone


def _scanned(data: bytes, cap: int) -> list[bytes]:
    starts = np.asarray(scan_words(jnp.asarray([list(data)], jnp.int32), cap)[0][0])
    cuts = np.flatnonzero(starts).tolist() + [len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:])]


TEXT = st.text(alphabet=st.sampled_from(list("aZb9_ .',!?(\n\t") + ["é", "日", "🙂", "Ω"]), max_size=40)


@settings(max_examples=60, deadline=None)
@given(TEXT, st.integers(1, 8))
def test_joining_the_words_gives_back_the_text_and_the_scan_agrees(text, cap):
    data = text.encode()
    words = split_words(data, cap)
    assert b"".join(words) == data
    assert all(0 < len(w) <= cap for w in words)
    assert _scanned(data, cap) == words if data else True


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_split(data):
    words = split_words(data, 7)
    assert b"".join(words) == data and all(0 < len(w) <= 7 for w in words)
    if data:
        assert _scanned(data, 7) == words
