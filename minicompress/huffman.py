"""Huffman coding (Huffman 1952): the last stage of Deep Compression, where frequent symbols get short codes.

After pruning and weight sharing a layer is a list of small integers (cluster indices, gaps between surviving
weights) whose frequencies are very uneven. A Huffman code gives symbol s a code of about -log2 p(s) bits, so the
average code length approaches the entropy H = -sum_s p(s) log2 p(s), never below it and less than one bit above.

The codes are *canonical*: only each symbol's code length is stored (one byte per symbol of the alphabet); the codes
themselves follow from the lengths (sorted by length, then symbol, counting upward), so the decoder rebuilds them.
"""

import heapq

import numpy as np

MAX_CODE_LENGTH = 56  # codes are handled as uint64 integers


def code_lengths(symbols, alphabet_size):
    """Length in bits of each symbol's Huffman code, uint8 (alphabet_size,); 0 for symbols that never occur.

    Builds the tree bottom-up: repeatedly merge the two least frequent subtrees; each merge adds one bit to every
    symbol below it. Ties are broken by creation order, so the result is deterministic.
    """
    symbols = _check_symbols(symbols, alphabet_size, "code_lengths")
    counts = np.bincount(symbols, minlength=alphabet_size)
    present = np.flatnonzero(counts)
    lengths = np.zeros(alphabet_size, dtype=np.uint8)
    if len(present) == 1:
        lengths[present] = 1  # a lone symbol still needs one bit per occurrence
        return lengths
    heap = [(int(counts[s]), i, [int(s)]) for i, s in enumerate(present)]
    heapq.heapify(heap)
    next_id = len(heap)
    depth = np.zeros(alphabet_size, dtype=np.int64)
    while len(heap) > 1:
        count_a, _, members_a = heapq.heappop(heap)
        count_b, _, members_b = heapq.heappop(heap)
        merged = members_a + members_b
        depth[merged] += 1
        heapq.heappush(heap, (count_a + count_b, next_id, merged))
        next_id += 1
    if depth.max(initial=0) > MAX_CODE_LENGTH:
        raise ValueError(f"code_lengths: a code would be {depth.max()} bits long (at most {MAX_CODE_LENGTH})")
    lengths[present] = depth[present]
    return lengths


def canonical_codes(lengths):
    """The canonical code of each symbol (uint64) from the code lengths: shorter codes first, then by symbol."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.uint64)
    code, previous = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - previous
        codes[s], previous = code, int(lengths[s])
        code += 1
    return codes


def encode(symbols, lengths):
    """Concatenate the codes of ``symbols`` into a bit stream: (packed uint8 array, number of bits)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    symbols = _check_symbols(symbols, len(lengths), "encode")
    if symbols.size and (lengths[symbols] == 0).any():
        missing = symbols[lengths[symbols] == 0][0]
        raise ValueError(f"encode: symbol {missing} has no code (its length is 0)")
    codes, n = canonical_codes(lengths)[symbols], lengths[symbols]
    total = int(n.sum())
    # bit k of the stream belongs to symbol j = owner[k], at position k - start[j] within its code (MSB first)
    starts = np.cumsum(n) - n
    owner = np.repeat(np.arange(len(symbols)), n)
    shift = (n[owner] - 1 - (np.arange(total) - starts[owner])).astype(np.uint64)
    bits = ((codes[owner] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits), total


def check_lengths(lengths, fn="check_lengths"):
    """Code lengths that a prefix code can have: integers in [0, MAX_CODE_LENGTH] satisfying Kraft's inequality
    sum_s 2^-l(s) <= 1 over the symbols with l(s) > 0 (a Huffman code meets it with equality, except a lone
    symbol's 1-bit code). Lengths past it make two symbols share a code: decoding would return wrong symbols."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not (np.issubdtype(lengths.dtype, np.integer) or lengths.size == 0):
        raise ValueError(f"{fn}: code lengths must be a 1-d integer array, got {lengths.dtype} {lengths.shape}")
    lengths = lengths.astype(np.int64)
    if lengths.size and (lengths.min() < 0 or lengths.max() > MAX_CODE_LENGTH):
        raise ValueError(f"{fn}: code lengths must be in [0, {MAX_CODE_LENGTH}], got [{lengths.min()}, "
                         f"{lengths.max()}]")
    kraft = sum(1 << (MAX_CODE_LENGTH - int(n)) for n in lengths[lengths > 0])  # exact, in integers
    if kraft > 1 << MAX_CODE_LENGTH:
        raise ValueError(f"{fn}: code lengths break Kraft's inequality (sum 2^-l = {kraft / 2**MAX_CODE_LENGTH:.4g}"
                         " > 1): no prefix code has them")
    return lengths


def decode(packed, n_bits, lengths, count):
    """Read ``count`` symbols back from a bit stream made by ``encode`` with the same ``lengths``; the stream must
    hold exactly ``n_bits`` bits of codes (each code is at least one bit, so count <= n_bits)."""
    lengths = check_lengths(lengths, "decode")
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8))
    if n_bits > len(bits) or n_bits < 0:
        raise ValueError(f"decode: the stream holds {len(bits)} bits, not the {n_bits} announced")
    if not 0 <= count <= n_bits:
        raise ValueError(f"decode: {count} symbols cannot come from {n_bits} bits (at least one bit each)")
    # canonical decoding: for each length L, codes of that length are first[L], first[L] + 1, ...
    order = sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s))
    codes = canonical_codes(lengths)
    lookup = {(int(lengths[s]), int(codes[s])): int(s) for s in order}
    out = np.empty(count, dtype=np.int64)
    position = 0
    for i in range(count):
        code, length = 0, 0
        while True:
            if position >= n_bits or length >= MAX_CODE_LENGTH:
                raise ValueError(f"decode: the stream ends or is corrupt after {i} of {count} symbols")
            code = (code << 1) | int(bits[position])
            position += 1
            length += 1
            symbol = lookup.get((length, code))
            if symbol is not None:
                out[i] = symbol
                break
    if position != n_bits:
        raise ValueError(f"decode: {n_bits - position} of the {n_bits} announced bits are left after {count} symbols")
    return out


def entropy_bits(symbols, alphabet_size):
    """Shannon's lower bound: the number of bits any code of these symbols (one at a time) needs, n * H."""
    counts = np.bincount(_check_symbols(symbols, alphabet_size, "entropy_bits"), minlength=alphabet_size)
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def _check_symbols(symbols, alphabet_size, fn):
    symbols = np.asarray(symbols).ravel()
    if symbols.size and not np.issubdtype(symbols.dtype, np.integer):
        raise TypeError(f"{fn}: symbols must be integers, got dtype {symbols.dtype}")
    symbols = symbols.astype(np.int64)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet_size):
        raise ValueError(f"{fn}: symbols must be in [0, {alphabet_size}), got range [{symbols.min()}, {symbols.max()}]")
    return symbols
