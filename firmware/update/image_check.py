# Check stage: the image's own integrity fields, on the stream, as esp_image_verify checks them
# on flash (image_scan._scan does the same on a partition): the checksum byte (0xEF XOR every
# segment data byte, the last byte of the 16-byte block after the data) and, when hash_appended
# is set, the SHA-256 of everything before the 32-byte digest that follows it. So a corrupt
# image is refused ("image digest does not verify", -2) before the boot switch; set_boot's own
# verify stays as the second line. Bytes after the image (a signature sector) are ignored.
#
# Steady state (a chunk inside one segment): one hashlib update and one native XOR call that
# folds to a byte itself, so nothing is allocated (a 32-bit word would be a big int on a 32-bit
# port). Where the port has no native emitter (importing xor32 fails) the XOR is a bytecode
# loop: slow, but right.
import hashlib
import struct

from firmware import app_image
from firmware.update.errors import E_INTEGRITY, UpdateError

try:
    from firmware.xor32 import xor_fold as _xor_fold
except Exception:
    _xor_fold = None


def _fold_bytes(buf, a, b):
    r = 0
    for i in range(a, b):
        r ^= buf[i]
    return r


class _Walk(app_image.StreamLength):
    """The stream walk of the headers, remembering each segment's data range (at most 16)."""

    def __init__(self):
        super().__init__()
        self.segs = []

    def _header_done(self):
        if self._left is not None:  # a segment header: its data follows it
            at = self._at + app_image.SEG_HEADER_LEN
            self.segs.append((at, at + struct.unpack_from("<I", self._hdr, 4)[0]))
        super()._header_done()


class ImageCheck:
    """Feed the image stream with update(buf); finish(end) raises UpdateError (-2) when the
    checksum or the appended digest does not match what went by.
    - digest=False leaves the SHA-256 out: a required Secure Boot V2 signature covers every
      byte of the image, the appended digest included, and set_boot still checks that digest
      (a second SHA-256 pass would cost as much as the signature stage itself);
    - defer=True: finish() only notes the end and verdict() checks, so the signature stage can
      name a signed image's fault first ("hash mismatch" rather than a checksum)."""

    def __init__(self, digest=True, defer=False):
        self._digest = digest
        self._defer = defer
        self._end = None
        self._walk = _Walk()
        self._h = None          # SHA-256 of the bytes before the digest, when one is appended
        self._acc = 0           # XOR of the segment data bytes so far
        self._si = 0            # first segment not yet XORed to its end
        self._pos = 0           # stream offset of the next byte
        self._body = None       # offset of the digest (end of the checksum block), once known
        self._stored = None     # the checksum byte
        self._tail = bytearray(app_image.DIGEST_LEN)

    def update(self, data):
        pos = self._pos
        top = pos + len(data)
        self._pos = top
        w = self._walk
        if w.length is None:
            if w.error is not None:
                return          # not an app image: HeaderCheck refuses it, finish() too
            w.feed(pos, data)
            if pos == 0 and w._hashed and self._digest:
                self._h = hashlib.sha256()
            if w.length is not None:
                self._body = (w.segs[-1][1] + 16) & ~15  # app_image.body_end
        body = self._body
        h = self._h
        # Until the last segment header has gone by, the digest is further on than this chunk.
        if body is None or top < body:
            if h is not None:
                h.update(data)
        else:
            self._end_piece(data, pos, top, body)
        segs = self._walk.segs
        si = self._si
        aligned = _xor_fold is not None and not pos & 3
        while si < len(segs):
            s, e = segs[si]
            if s >= top:
                break
            a = s - pos if s > pos else 0  # segment data is word aligned in the image
            b = (e if e < top else top) - pos
            if a < b:
                self._acc ^= _xor_fold(data, a >> 2, b >> 2) if aligned \
                    else _fold_bytes(data, a, b)
            if e > top:
                break
            si += 1
        self._si = si

    def _end_piece(self, data, pos, top, body):
        """The chunk the image's tail falls in: the hash stops, the checksum and digest are kept."""
        if pos < body and self._h is not None:
            self._h.update(memoryview(data)[:body - pos])
        if pos <= body - 1 < top:
            self._stored = data[body - 1 - pos]
        for i in range(max(pos, body), min(top, body + app_image.DIGEST_LEN)):
            self._tail[i - body] = data[i - pos]

    def finish(self, end):
        self._end = end
        if not self._defer:
            self.verdict()

    def verdict(self):
        end = self._end
        w = self._walk
        if w.length is None:
            raise UpdateError(E_INTEGRITY, "bad image: %s" % (w.error or "segments never end"))
        if end < w.length:
            raise UpdateError(E_INTEGRITY, "image needs %d bytes, got %d" % (w.length, end))
        if self._h is not None and self._h.digest() != bytes(self._tail):
            raise UpdateError(E_INTEGRITY, "image digest does not verify")
        calc = app_image.CHECKSUM_MAGIC ^ self._acc
        if self._stored != calc:
            raise UpdateError(E_INTEGRITY, "image checksum does not verify (0x%02x, calculated "
                              "0x%02x)" % (self._stored, calc))
