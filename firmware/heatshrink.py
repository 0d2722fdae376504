# Streaming heatshrink (LZSS) decoder, as detools' "heatshrink" patch compression uses it.
#
# detools writes one header byte in front of the stream (detools/compression/heatshrink.py
# pack_header, c/detools.c unpack_heatshrink_header): window_bits - 4 in the high nibble,
# lookahead_bits - 3 in the low one. heatshrink_decoder_alloc accepts window 4..15 bits and
# lookahead 3..window-1; detools' default (and esp_delta_ota's) is 8 and 7. The decoding loop
# itself is delta_ops.heatshrink (or its viper twin).
from array import array


class HeatshrinkError(ValueError):
    pass


def parse_header(byte):
    """(window_bits, lookahead_bits) of a detools heatshrink header byte, or HeatshrinkError."""
    w = (byte >> 4) + 4
    la = (byte & 0x0F) + 3
    if w > 15 or la >= w:
        raise HeatshrinkError("bad heatshrink parameters (window %d, lookahead %d bits)" % (w, la))
    return w, la


class Decoder:
    """feed() input (kept by reference, not copied), then decode() into output buffers until
    pending() is False. The window (2**window_bits bytes) is the only buffer it owns."""

    def __init__(self, window_bits, lookahead_bits, kernel):
        self._win = bytearray(1 << window_bits)
        self._st = array("i", [0] * 12)
        self._st[10] = window_bits
        self._st[11] = lookahead_bits
        self._k = kernel
        self._in = b""

    def feed(self, buf, start, end):
        self._in = buf
        self._st[0] = start
        self._st[1] = end

    def pending(self):
        return self._st[0] < self._st[1]

    def decode(self, out, start, end):
        """Decode into out[start:end]; return the number of bytes written."""
        st = self._st
        st[2] = start
        st[3] = end
        self._k(st, self._in, out, self._win)
        return st[2] - start

    def idle(self):
        """False while a back-reference still has bytes to emit (the stream cannot end there)."""
        return not (self._st[6] == 4 and self._st[9] > 0)
