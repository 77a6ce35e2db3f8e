"""HAT's word splitter: a byte automaton, so training and decoding cut words identically.

A word boundary falls before a byte when the rules below say so, decided from
that byte, the character class of the bytes before it, and the current word's
length; no byte after it is looked at. That makes the splitter causal: during
decoding the engine learns whether a sampled byte begins a new word (and so
whether the previous word is complete and the backbone must run) the moment
the byte is drawn, exactly as the teacher-forced pass over the same text cut it.

The rules (Unicode word boundaries as far as a causal byte rule can follow them):
- letters, digits and `_` run together (UAX #29 keeps "abc123", "x_y" whole); a
  word also joins across one `.` or `'` between letters or digits ("don't", "3.14");
- camelCase splits: a boundary before an ASCII capital that follows a lower-case letter;
- punctuation is attached to the preceding word ("Hello," "wait..."), and a
  word that follows punctuation begins a new word;
- whitespace begins a word and is joined to the word that follows (" world");
  a run of whitespace stays together with that word ("\\n\\n    return");
- each CJK ideograph or kana (UTF-8 lead bytes E3..E9) is a word of its own, as
  UAX #29 has it; other non-ASCII letters (Latin, Greek, Cyrillic, Hebrew, Arabic,
  Indic, Hangul, ...) join words like ASCII letters;
- general punctuation, symbols and emoji (lead bytes E2, F0..F4) are punctuation;
- the end-of-text special is a word of its own;
- a word is cut after `max_word_bytes` bytes, even inside a character: never dropped.

A non-ASCII character's class comes from its lead byte (its continuation bytes
never start a word), which is where the rule approximates UAX #29: a few Latin-1
punctuation marks (« ¿) count as letters. Bytes that are not valid UTF-8 are
punctuation, so any byte string splits.

Everything is table-driven (`START`, `NEXT` over states × classes): the pure
Python `split_words`, the batched `scan_words` (JAX, for training and prefill)
and the decoder's per-byte `step` read the same tables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

EOS = 256  # the end-of-text special; byte values are 0..255
VOCAB_SIZE = 257
MAX_WORD_BYTES = 100

# Byte classes.
LOWER, UPPER, DIGIT, SPACE, MID, PUNCT, CONT, LETTER, IDEO, SPECIAL = range(10)
# States: what the bytes before (the last character's class) leave behind. START: nothing yet;
# MIDALNUM: a "." or "'" right after a letter or digit (a word may continue through it).
(S_START, S_LOWER, S_UPPER, S_DIGIT, S_SPACE, S_MIDALNUM, S_PUNCT, S_LETTER, S_IDEO, S_SPECIAL) = range(10)


def _byte_classes() -> np.ndarray:
    cls = np.full(VOCAB_SIZE, PUNCT, np.int32)
    cls[ord("a") : ord("z") + 1] = LOWER
    cls[ord("A") : ord("Z") + 1] = UPPER
    cls[ord("0") : ord("9") + 1] = DIGIT
    cls[ord("_")] = DIGIT
    for c in " \t\n\r\x0b\x0c":
        cls[ord(c)] = SPACE
    for c in ".'":
        cls[ord(c)] = MID
    cls[0x80:0xC0] = CONT
    cls[0xC2:0xE2] = LETTER  # U+0080..U+1FFF: Latin-1 .. Latin Extended, Greek, Cyrillic, Hebrew, Arabic, Indic
    cls[0xE3:0xEA] = IDEO  # U+3000..U+9FFF: CJK punctuation, kana, ideographs
    cls[0xEA:0xF0] = LETTER  # U+A000..U+FFFF: Yi, Hangul syllables, compatibility forms
    cls[EOS] = SPECIAL
    return cls


def _tables() -> tuple[np.ndarray, np.ndarray]:
    n = 10
    start = np.zeros((n, n), bool)
    nxt = np.zeros((n, n), np.int32)
    word_states = (S_LOWER, S_UPPER, S_DIGIT, S_LETTER, S_MIDALNUM)
    for s in range(n):
        fresh = s in (S_START, S_SPECIAL)  # nothing open to join: every byte starts a word
        for c, state in ((LOWER, S_LOWER), (DIGIT, S_DIGIT), (LETTER, S_LETTER), (UPPER, S_UPPER)):
            start[s, c] = fresh or s not in word_states + (S_SPACE,)
            nxt[s, c] = state
        start[S_LOWER, UPPER] = True  # camelCase
        start[s, SPACE] = s != S_SPACE
        nxt[s, SPACE] = S_SPACE
        start[s, MID] = start[s, PUNCT] = start[s, CONT] = fresh
        nxt[s, MID] = S_MIDALNUM if s in (S_LOWER, S_UPPER, S_DIGIT, S_LETTER) else S_PUNCT
        nxt[s, PUNCT] = S_PUNCT
        nxt[s, CONT] = S_PUNCT if fresh else s  # a continuation byte keeps its character's class
        start[s, IDEO] = s != S_SPACE
        nxt[s, IDEO] = S_IDEO
        start[s, SPECIAL] = True
        nxt[s, SPECIAL] = S_SPECIAL
    return start, nxt


CLASSES = _byte_classes()
START, NEXT = _tables()


def split_words(data: bytes, max_word_bytes: int = MAX_WORD_BYTES) -> list[bytes]:
    """The words of `data` (any bytes), in order; b"".join of them is `data`."""
    words, state, length, begin = [], S_START, 0, 0
    for i, byte in enumerate(data):
        cls = CLASSES[byte]
        if (START[state, cls] or length >= max_word_bytes) and i > 0:
            words.append(data[begin:i])
            begin, length = i, 0
        state, length = NEXT[state, cls], length + 1
    if data:
        words.append(data[begin:])
    return words


def step(state, length, byte, max_word_bytes: int):
    """One byte through the automaton, batched: (starts a word [B] bool, state [B], word length [B]).

    `length` counts the current word's bytes (0 at the start of text, where every byte starts a word)."""
    cls = jnp.asarray(CLASSES)[byte]
    starts = jnp.asarray(START)[state, cls] | (length >= max_word_bytes) | (length == 0)
    return starts, jnp.asarray(NEXT)[state, cls], jnp.where(starts, 1, length + 1)


def scan_words(data: jax.Array, max_word_bytes: int):
    """For byte rows [B, S] (values 0..256) read from byte 0, at every byte [B, S]: whether it begins a word,
    and the automaton's state and the word's length after it."""
    b = data.shape[0]

    def scan(carry, byte):
        starts, state, length = step(*carry, byte, max_word_bytes)
        return (state, length), (starts, state, length)

    init = (jnp.full((b,), S_START, jnp.int32), jnp.zeros((b,), jnp.int32))
    _, out = jax.lax.scan(scan, init, data.T)
    return tuple(x.T for x in out)
