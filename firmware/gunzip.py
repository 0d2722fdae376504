# Streaming gzip inflation for downloads: a readinto() source of inflated bytes over an HTTP
# response (anything with readinto(buf) -> n, 0 at the end).
#
# deflate.DeflateIO pulls its input one byte at a time. Over a Python-level stream that is a
# method call per compressed byte (about 250 ms per MiB on the unix port, far worse on the chip),
# so DeflateIO reads from a native micropython.RingIO instead, which this class keeps topped up
# from the response in whole buffers. The ring always holds enough input for one output buffer
# (a deflate stream never needs more than ~2 input bytes per output byte plus a block header),
# because DeflateIO cannot resume after running dry. Without RingIO (old firmware) it falls back
# to the slow Python-level stream.
import deflate
import io

try:
    from micropython import RingIO
except ImportError:
    RingIO = None


class GzipError(Exception):
    pass


class _Pull(io.IOBase):
    """Fallback stream for DeflateIO when RingIO is missing: one response read per call."""

    def __init__(self, src):
        self.src = src

    def readinto(self, buf):
        return self.src._wire_read(buf)


class Gunzip:
    """Inflated bytes of a gzip response. Wire bytes go through `hashes` (objects with update())
    before inflation; `.wire` counts them. readinto() raises GzipError on corrupt or truncated
    data and passes the response's own errors (e.g. a dropped connection) through."""

    def __init__(self, resp, out_len=4096, wire_len=4096, hashes=()):
        self.resp = resp
        self.hashes = hashes
        self.wire = 0
        self.eof = False
        self._buf = bytearray(wire_len)
        self._mv = memoryview(self._buf)
        self._low = 2 * out_len + 2048  # input kept ready for one out_len read
        if RingIO is not None:
            self._ring = RingIO(self._low + wire_len)
            self._z = deflate.DeflateIO(self._ring, deflate.GZIP)
        else:
            self._ring = None
            self._z = deflate.DeflateIO(_Pull(self), deflate.GZIP)

    def _wire_read(self, buf):
        n = self.resp.readinto(buf)
        if n:
            data = buf if n == len(buf) else memoryview(buf)[:n]
            for h in self.hashes:
                h.update(data)
            self.wire += n
        else:
            self.eof = True
        return n

    def _top_up(self):
        ring = self._ring
        buf = self._buf
        while not self.eof and ring.any() < self._low:
            n = self._wire_read(buf)
            if n:
                ring.write(buf if n == len(buf) else self._mv[:n])

    def readinto(self, out):
        if self._ring is not None:
            self._top_up()
        try:
            return self._z.readinto(out)
        except EOFError:
            raise GzipError("gzip stream ended early")
        except (OSError, ValueError):
            raise GzipError("gzip data corrupt")

    def close(self):
        self.resp.close()

    def drain(self, limit):
        """Read (and hash) whatever follows the gzip stream, up to `limit` wire bytes in total."""
        while not self.eof and self.wire <= limit:
            self._wire_read(self._buf)
