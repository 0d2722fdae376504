# Source stage: inflate a gzip body on the fly, so the stages after it see plain image bytes.
#
# It wraps a source of wire bytes (HttpSource). With always=True (a ".gz" URL) every response is
# inflated; otherwise only one that says Content-Encoding: gzip, and a plain body passes through
# untouched. An inflater cannot continue mid-stream, so an inflating open() always restarts the
# body at byte 0 (the pipeline skips what it already has).
#
# deflate.DeflateIO pulls its input one byte at a time. Over a Python-level stream that is a
# method call per compressed byte (about 250 ms per MiB on the unix port, far worse on the chip),
# so DeflateIO reads from a native micropython.RingIO instead, kept topped up from the wire in
# whole buffers. The ring always holds enough input for one output buffer (a deflate stream
# never needs more than ~2 input bytes per output byte plus a block header), because DeflateIO
# cannot resume after running dry. Without RingIO (old firmware) it falls back to the slow
# Python-level stream. One inflate call yields at most PIECE bytes (a RingIO holds < 64 KiB), so
# RAM when inflating is DeflateIO's 32 KiB window, the ring (2 pieces + 2 KiB + one wire buffer)
# and the wire buffer of one piece -- with 4 KiB chunks a piece is a chunk.
import deflate
import io

from firmware.update.errors import E_INTEGRITY, UpdateError
from firmware.update.http_source import Wrapper

try:
    from micropython import RingIO
except ImportError:
    RingIO = None


PIECE = 8192


class _Pull(io.IOBase):
    """Fallback stream for DeflateIO when RingIO is missing: one wire read per call."""

    def __init__(self, src):
        self.src = src

    def readinto(self, buf):
        return self.src._wire_read(buf)


class GzipSource(Wrapper):
    def __init__(self, inner, chunk=4096, always=False, wire_size=None, wire_limit=None):
        self.inner = inner
        self.active = always
        self.resumable = not always
        self.wire_size = wire_size    # the .gz file's length, as the offer says
        self.wire_limit = wire_limit  # trailing bytes are read (and hashed) up to this much
        self._out_len = chunk if chunk < PIECE else PIECE
        self._buf = None
        self._z = None
        if not always:
            self.readinto = inner.readinto  # plain until a response says otherwise

    def length(self):
        return None if self.active else self.inner.length()

    def open(self, pos):
        inner = self.inner
        start = inner.open(0 if self.active else pos)
        if not self.active:
            if not inner.encoded:
                return start
            self.active = True  # the server compresses on the fly: from now on, inflate
            self.resumable = False
        self._start()
        return 0

    def _start(self):
        if self._buf is None:
            self._buf = bytearray(self._out_len)
            self._mv = memoryview(self._buf)
        self._low = 2 * self._out_len + 2048  # input kept ready for one output buffer
        self._eof = False
        if RingIO is not None:
            self._ring = RingIO(self._low + self._out_len)
            self._z = deflate.DeflateIO(self._ring, deflate.GZIP)
        else:
            self._ring = None
            self._z = deflate.DeflateIO(_Pull(self), deflate.GZIP)
        self.readinto = self._inflate

    def _wire_read(self, buf):
        n = self.inner.readinto(buf)
        if not n:
            self._eof = True
        return n

    def _top_up(self):
        ring = self._ring
        buf = self._buf
        while not self._eof and ring.any() < self._low:
            n = self._wire_read(buf)
            if n:
                ring.write(buf if n == len(buf) else self._mv[:n])

    def _inflate(self, out):
        if self._ring is not None:
            self._top_up()
        if len(out) > self._out_len:
            out = memoryview(out)[:self._out_len]
        try:
            n = self._z.readinto(out)
        except EOFError:
            raise UpdateError(E_INTEGRITY, "gzip stream ended early")
        except (OSError, ValueError):
            raise UpdateError(E_INTEGRITY, "gzip data corrupt")
        if not n:
            self._drain()
        return n

    def _drain(self):
        """Read (and so tap) whatever follows the gzip stream, up to wire_limit in total."""
        limit = self.wire_size if self.wire_size is not None else self.wire_limit
        while not self._eof and (limit is None or self.inner.wire <= limit):
            self._wire_read(self._buf)

    def finish(self):
        self.inner.finish()
        if self.wire_size is not None and self.inner.wire != self.wire_size:
            raise UpdateError(E_INTEGRITY, "download is %d bytes, offer says %d"
                              % (self.inner.wire, self.wire_size))

    def close(self):
        self.inner.close()
