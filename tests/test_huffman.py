"""Huffman coding: optimal code lengths, canonical codes, lossless round trips, the entropy bound."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress import huffman


def test_textbook_example_code_lengths_and_total_bits():
    """Frequencies a:45 b:13 c:12 d:16 e:9 f:5 (Cormen et al.): a gets 1 bit, b c d 3 bits, e f 4 bits: 224 bits."""
    symbols = np.repeat(np.arange(6), [45, 13, 12, 16, 9, 5])
    lengths = huffman.code_lengths(symbols, 6)
    np.testing.assert_array_equal(lengths, [1, 3, 3, 3, 4, 4])
    packed, n_bits = huffman.encode(symbols, lengths)
    assert n_bits == 224 and len(packed) == 28


def test_canonical_codes_are_prefix_free_and_fill_the_kraft_sum():
    lengths = np.array([2, 1, 3, 3, 0], dtype=np.uint8)
    codes = huffman.canonical_codes(lengths)
    words = [format(int(codes[s]), f"0{lengths[s]}b") for s in range(4)]
    assert words == ["10", "0", "110", "111"]
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    assert sum(2.0 ** -int(n) for n in lengths if n) == 1.0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 11), min_size=0, max_size=300))
def test_round_trip_is_lossless_and_within_one_bit_of_entropy(values):
    symbols = np.array(values, dtype=np.int64)
    lengths = huffman.code_lengths(symbols, 12)
    packed, n_bits = huffman.encode(symbols, lengths)
    np.testing.assert_array_equal(huffman.decode(packed, n_bits, lengths, len(symbols)), symbols)
    if len(set(values)) > 1:
        h = huffman.entropy_bits(symbols, 12)
        assert h - 1e-9 <= n_bits < h + len(symbols)


def test_single_symbol_and_empty_input():
    lengths = huffman.code_lengths(np.zeros(5, dtype=int), 3)
    np.testing.assert_array_equal(lengths, [1, 0, 0])
    packed, n_bits = huffman.encode(np.zeros(5, dtype=int), lengths)
    assert n_bits == 5
    np.testing.assert_array_equal(huffman.decode(packed, n_bits, lengths, 5), 0)
    empty = huffman.code_lengths(np.zeros(0, dtype=int), 4)
    assert huffman.encode(np.zeros(0, dtype=int), empty)[1] == 0


def test_bad_input_explains():
    with pytest.raises(ValueError, match=r"symbols must be in \[0, 4\), got range \[0, 7\]"):
        huffman.code_lengths(np.array([0, 7]), 4)
    with pytest.raises(TypeError, match="symbols must be integers"):
        huffman.code_lengths(np.array([0.5]), 4)
    lengths = huffman.code_lengths(np.array([0, 1, 1]), 3)
    with pytest.raises(ValueError, match="symbol 2 has no code"):
        huffman.encode(np.array([2]), lengths)
    packed, n_bits = huffman.encode(np.array([0, 1, 1]), lengths)
    with pytest.raises(ValueError, match="5 symbols cannot come from 3 bits"):
        huffman.decode(packed, n_bits, lengths, 5)
    with pytest.raises(ValueError, match="stream ends or is corrupt after 1 of 3 symbols"):
        huffman.decode(np.packbits([0, 1, 1, 1]), 4, np.array([1, 3, 0]), 3)  # "0", then "111" is no code


def test_kraft_inequality_and_stream_length_are_checked():
    # 1, 1, 2 bits: 1/2 + 1/2 + 1/4 > 1, so two symbols would share a code ("0" and "1" are prefixes of "10")
    with pytest.raises(ValueError, match="Kraft"):
        huffman.decode(np.packbits([0, 1, 0]), 3, np.array([1, 1, 2], np.uint8), 2)
    huffman.check_lengths(np.array([1, 2, 2]))  # 1/2 + 1/4 + 1/4 = 1: a complete code
    with pytest.raises(ValueError, match=r"in \[0, 56\]"):
        huffman.check_lengths(np.array([1, 200]))
    lengths = np.array([1, 1], np.uint8)
    packed, n_bits = huffman.encode(np.array([0, 1, 1]), lengths)
    with pytest.raises(ValueError, match="1 of the 3 announced bits are left"):
        huffman.decode(packed, n_bits, lengths, 2)
