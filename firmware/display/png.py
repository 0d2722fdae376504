# Streaming PNG writer for big-endian RGB565 pixel memory (8-bit RGB, filter 0 rows).
# The zlib stream comes from deflate.DeflateIO when the port can compress; ports built without
# compression (the pip unix build) get valid zlib "stored" blocks with our own Adler-32.
import binascii
import struct

_SIG = b"\x89PNG\r\n\x1a\n"
_IDAT_MAX = 8192


def _chunk(f, kind, data):
    f.write(struct.pack(">I", len(data)))
    f.write(kind)
    f.write(data)
    f.write(struct.pack(">I", binascii.crc32(data, binascii.crc32(kind)) & 0xFFFFFFFF))


class _IdatSink:
    """A stream that packs whatever the compressor writes into IDAT chunks."""

    def __init__(self, f):
        self.f = f
        self.buf = bytearray()

    def write(self, b):
        self.buf.extend(b)
        if len(self.buf) >= _IDAT_MAX:
            self.flush()
        return len(b)

    def flush(self):
        if self.buf:
            _chunk(self.f, b"IDAT", self.buf)
            self.buf = bytearray()


class _StoredZlib:
    """zlib container with uncompressed (stored) deflate blocks: one block per write, then an
    empty final block and the Adler-32 of everything written."""

    def __init__(self, sink):
        self.sink = sink
        self.s1 = 1
        self.s2 = 0
        sink.write(b"\x78\x01")

    def _block(self, data, final):
        n = len(data)
        self.sink.write(struct.pack("<BHH", 1 if final else 0, n, n ^ 0xFFFF))
        if n:
            self.sink.write(data)

    def write(self, data):
        # Adler-32, reduced once per write (one row) so the sums stay small ints on 32 bits.
        s1 = self.s1
        s2 = self.s2
        for b in data:
            s1 += b
            s2 += s1
        self.s1 = s1 % 65521
        self.s2 = s2 % 65521
        self._block(data, False)

    def close(self):
        self._block(b"", True)
        self.sink.write(struct.pack(">I", (self.s2 << 16) | self.s1))


def _compressor(sink):
    try:
        import deflate
        z = deflate.DeflateIO(sink, deflate.ZLIB)
        if hasattr(z, "write"):
            return z
    except (ImportError, AttributeError, ValueError):
        pass
    return _StoredZlib(sink)


def write_rgb565(path, width, height, pixels):
    """Write `pixels` (width*height big-endian RGB565, or None for black) to `path` as an RGB
    PNG, converting and compressing one row at a time."""
    row = bytearray(1 + width * 3)   # filter byte 0 + RGB888
    with open(path, "wb") as f:
        f.write(_SIG)
        _chunk(f, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        sink = _IdatSink(f)
        z = _compressor(sink)
        src = 0
        for _ in range(height):
            j = 1
            for _ in range(width if pixels is not None else 0):
                hi = pixels[src]
                lo = pixels[src + 1]
                src += 2
                r = hi & 0xF8
                g = ((hi & 0x07) << 5) | ((lo >> 3) & 0x1C)
                b = (lo & 0x1F) << 3
                row[j] = r | (r >> 5)
                row[j + 1] = g | (g >> 6)
                row[j + 2] = b | (b >> 5)
                j += 3
            z.write(row)
        z.close()
        sink.flush()
        _chunk(f, b"IEND", b"")
    return path
