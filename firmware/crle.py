# Streaming decoder of detools' "crle" patch compression (conditional run-length encoding).
#
# Segments (detools/compression/crle.py, c/detools.c patch_reader_crle_*): a kind byte, 0 =
# scattered: a size, then that many bytes as they are; 1 = repeated: a count, then the one byte
# to repeat. Sizes are little-endian 7-bit groups, bit 7 set on all but the last (unpack_usize).
# Same interface as heatshrink.Decoder; the byte copies and fills go through delta_ops kernels.
from array import array


class CrleError(ValueError):
    pass


KIND, SIZE, DATA, COUNT, VALUE, FILL = range(6)
MAX_SHIFT = 28  # a size never needs more than 4 groups here (images are < 16 MiB)


class Decoder:
    def __init__(self, copy, fill):
        self._copy = copy
        self._fill = fill
        self._st = array("i", [0] * 4)
        self._in = b""
        self._ip = 0
        self._iend = 0
        self._ph = KIND
        self._left = 0
        self._shift = 0
        self._value = 0

    def feed(self, buf, start, end):
        self._in = buf
        self._ip = start
        self._iend = end

    def pending(self):
        return self._ip < self._iend

    def idle(self):
        """True between segments (where a stream may end)."""
        return self._ph == KIND

    def decode(self, out, start, end):
        buf = self._in
        ip = self._ip
        iend = self._iend
        op = start
        st = self._st
        while op < end:
            ph = self._ph
            if ph == DATA or ph == FILL:
                n = min(self._left, end - op)
                st[0] = op
                st[3] = n
                if ph == DATA:
                    n = min(n, iend - ip)
                    if not n:
                        break
                    st[1] = ip
                    st[3] = n
                    self._copy(out, buf, st)
                    ip += n
                else:
                    st[1] = self._value
                    self._fill(out, st)
                op += n
                self._left -= n
                if not self._left:
                    self._ph = KIND
                continue
            if ip >= iend:
                break
            b = buf[ip]
            ip += 1
            if ph == KIND:
                if b > 1:
                    raise CrleError("bad crle segment kind %d" % b)
                self._ph = SIZE if b == 0 else COUNT
                self._left = 0
                self._shift = 0
            elif ph == VALUE:
                self._value = b
                self._ph = FILL if self._left else KIND
            else:  # SIZE or COUNT: one 7-bit group
                if self._shift >= MAX_SHIFT:
                    raise CrleError("crle size field too long")
                self._left |= (b & 0x7F) << self._shift
                self._shift += 7
                if not b & 0x80:
                    if ph == COUNT:
                        self._ph = VALUE
                    else:
                        self._ph = DATA if self._left else KIND
        self._ip = ip
        return op - start
