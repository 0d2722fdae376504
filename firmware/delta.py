# Delta updates: apply a detools "sequential" patch while it streams in, reading the image it
# was made from (the running app partition, never written) and handing out the new image
# through readinto(), so the flash writer and its checks consume it like a full download.
#
# Patch file, as tools/make_delta.py writes it and esp_delta_ota consumes it:
#   esp_delta_ota header (optional), 64 bytes: magic 0xFCCDDE10 (u32 LE), the base image's
#     SHA-256, 28 reserved bytes (espressif/idf-extra-components esp_delta_ota:
#     examples/https_delta_ota/main/main.c verify_patch_header, tools/esp_delta_ota_patch_gen.py).
#     Its first byte, 0x10, is never the first byte of a sequential detools patch (0x00..0x0F).
#   detools header: one byte, bits 6..4 the patch type (0 = sequential), bits 3..0 the
#     compression (0 none, 2 crle, 4 heatshrink); then the target size.
#   compressed stream (detools/apply.py apply_patch_sequential, c/detools.c process_*): the
#     size of a data-format section (must be 0 here), then until the target is complete: diff
#     size and bytes (added byte-wise mod 256 to the base bytes at the base position, which
#     advances with them), extra size and bytes (taken as they are), and an adjustment (a signed
#     size added to the base position).
#   detools size (common.py unpack_size): first byte bit 7 = more bytes follow, bit 6 = negative,
#     bits 5..0 the lowest value bits; each further byte 7 more bits, bit 7 = more.
#
# Memory: the input buffer, one of decompressed patch bytes (the input buffer itself for
# "none"), a window of the base image read with readblocks, and heatshrink's window (2**window
# bits, 256 bytes by default); steady-state readinto() allocates nothing.
# Resume: the decoder and base position cannot be saved, so after a reset the patch is applied
# again from its first byte (it is small); the output is the same bytes every time.
from array import array
import binascii

from firmware import app_image, crle, delta_ops, heatshrink, image_scan

ESP_MAGIC = b"\x10\xde\xcd\xfc"
ESP_HEADER_LEN = 64
DIGEST_LEN = 32
COMPRESSIONS = ("none", "lzma", "crle", "bz2", "heatshrink", "zstd", "lz4")  # detools/common.py
SUPPORTED = ("none", "crle", "heatshrink")
MAX_SHIFT = 20  # at most 4 size bytes (27 bits): more than any image offset

DFSIZE, DIFF_SIZE, DIFF, EXTRA_SIZE, EXTRA, ADJUST, DONE = range(7)


class DeltaError(Exception):
    pass


class TruncatedPatch(DeltaError):
    pass


class CorruptPatch(DeltaError):
    pass


class TooLarge(DeltaError):
    pass


class WrongBase(DeltaError):
    pass


def running_sha256(part):
    """The base digest esp_delta_ota compares (see image_scan.app_sha256)."""
    return image_scan.app_sha256(part)


def _digest(value, what):
    """32 digest bytes from bytes or hex text; None for None or ""."""
    if isinstance(value, (bytes, bytearray)):
        d = bytes(value)
    elif value is None or not str(value).strip():
        return None
    else:
        try:
            d = binascii.unhexlify(str(value).strip())
        except ValueError:
            d = b""
    if len(d) != DIGEST_LEN:
        raise DeltaError("bad %s SHA-256" % what)
    return d


class Applier:
    """The image a patch makes, as a readinto() source.

    src: the patch file (readinto(buf) -> n, 0 at its end); its bytes pass through `hashes`
    (objects with update()) and are counted in .wire. base: the partition the patch applies to
    (esp32.Partition API). limit: the largest image accepted (the target partition's size).
    base_size: how much of `base` a patch may read (default: its image's length). mode: see
    delta_ops.MODE. Reads the headers at once: .base_sha256 (None without the esp_delta_ota
    header), .size (the image's length), .compression, .kernels ("viper" or "plain").

    Raises TruncatedPatch, CorruptPatch, TooLarge or WrongBase (all DeltaError); the errors of
    src and of base.readblocks pass through."""

    def __init__(self, src, base, limit, base_size=None, hashes=(), chunk=4096, mode=None):
        if chunk < 128:
            raise ValueError("chunk must be at least 128 bytes")
        self.src = src
        self.base = base
        self.hashes = hashes
        self.wire = 0
        self._eof = False
        self.kernels, self._add, self._copy, fill, hs = delta_ops.kernels(mode)
        if base_size is None:
            base_size = image_scan.image_length(base)
        self._bsize = base_size
        try:
            self._bs = base.ioctl(5, 0) or 4096  # the block size readblocks counts in
        except (AttributeError, OSError):
            self._bs = 4096
        self._bbuf = bytearray(min(chunk, base_size))
        self._bstart = -len(self._bbuf) - 1  # nothing read yet
        self._in = bytearray(chunk)
        self._inmv = memoryview(self._in)
        self._st = array("i", [0, 0, 0, 0])
        self._pos = 0     # image bytes handed out
        self._fpos = 0    # base position
        self._left = 0    # bytes left in the current diff or extra run
        self._ph = DFSIZE
        self._ip = 0
        self._ie = 0
        self._header(limit, chunk, fill, hs)

    # ---- input ---------------------------------------------------------------------------
    def _wire_read(self, start):
        """Read patch bytes into the input buffer from `start`; return how many (0 at EOF)."""
        if self._eof:
            return 0
        n = self.src.readinto(self._inmv[start:] if start else self._in)
        if not n:
            self._eof = True
            return 0
        data = self._in if n == len(self._in) else self._inmv[start:start + n]
        for h in self.hashes:
            h.update(data)
        self.wire += n
        return n

    def _in_byte(self):
        if self._ip >= self._ie:
            self._ip = 0
            self._ie = self._wire_read(0)
            if not self._ie:
                raise TruncatedPatch("patch ends inside its header")
        b = self._in[self._ip]
        self._ip += 1
        return b

    def _header(self, limit, chunk, fill, hs):
        while self._ie < ESP_HEADER_LEN + 8:
            n = self._wire_read(self._ie)
            if not n:
                break
            self._ie += n
        b = self._in
        self.base_sha256 = None
        if bytes(b[:4]) == ESP_MAGIC:
            if self._ie <= ESP_HEADER_LEN:
                raise TruncatedPatch("patch ends inside its esp_delta_ota header")
            self.base_sha256 = bytes(b[4:4 + DIGEST_LEN])
            self._ip = ESP_HEADER_LEN
        h = self._in_byte()
        if h >> 4 & 7:
            raise CorruptPatch("not a detools sequential patch (type %d)" % (h >> 4 & 7))
        c = h & 15
        self.compression = COMPRESSIONS[c] if c < len(COMPRESSIONS) else str(c)
        if self.compression not in SUPPORTED:
            raise CorruptPatch("patch compression %s is not supported (none, crle, heatshrink)"
                               % self.compression)
        self.size = self._size(True)
        if self.size <= 0:
            raise CorruptPatch("patch makes no image (size %d)" % self.size)
        if self.size > limit:
            raise TooLarge("patch makes a %d-byte image, more than the %d bytes allowed"
                           % (self.size, limit))
        if self.compression == "none":
            self._dec = None
            self._plain = self._in
            self._pp = self._ip
            self._pe = self._ie
            return
        self._plain = bytearray(chunk)
        self._pp = 0
        self._pe = 0
        if self.compression == "heatshrink":
            try:
                w, la = heatshrink.parse_header(self._in_byte())
            except heatshrink.HeatshrinkError as e:
                raise CorruptPatch(str(e))
            self._dec = heatshrink.Decoder(w, la, hs)
        else:
            self._dec = crle.Decoder(self._copy, fill)
        self._dec.feed(self._in, self._ip, self._ie)

    def _fill_plain(self):
        """Make decompressed patch bytes available; False at the end of the patch file."""
        dec = self._dec
        if dec is None:
            self._pp = 0
            self._pe = self._wire_read(0)
            return self._pe > 0
        plain = self._plain
        while True:
            try:
                n = dec.decode(plain, 0, len(plain))
            except crle.CrleError as e:
                raise CorruptPatch(str(e))
            if n:
                self._pp = 0
                self._pe = n
                return True
            m = self._wire_read(0)
            if not m:
                return False
            dec.feed(self._in, 0, m)

    def _truncated(self):
        return TruncatedPatch("patch ends early: %d of %d image bytes made" % (self._pos, self.size))

    def _byte(self):
        if self._pp >= self._pe and not self._fill_plain():
            raise self._truncated()
        b = self._plain[self._pp]
        self._pp += 1
        return b

    def _size(self, header=False):
        b = self._in_byte() if header else self._byte()
        v = b & 0x3F
        neg = b & 0x40
        shift = 6
        while b & 0x80:
            if shift > MAX_SHIFT:
                raise CorruptPatch("patch size field too long")
            b = self._in_byte() if header else self._byte()
            v |= (b & 0x7F) << shift
            shift += 7
        return -v if neg else v

    # ---- the patch's control records -----------------------------------------------------
    def _control(self):
        ph = self._ph
        n = self._size()
        if ph == ADJUST:
            self._fpos += n
            if self._pos == self.size:
                self._finish()
                self._ph = DONE
            else:
                self._ph = DIFF_SIZE
        elif ph == DFSIZE:
            if n:
                raise CorruptPatch("data-format patches are not supported")
            self._ph = DIFF_SIZE
        else:
            if n < 0 or self._pos + n > self.size:
                raise CorruptPatch("patch data runs past the end of the %d-byte image" % self.size)
            self._left = n
            self._ph = ph + 1

    def _finish(self):
        # The image is complete: the patch file must end here too (detools: "End of patch not
        # found"; c/detools.c patch_reader_*_destroy).
        if self._pp < self._pe or self._fill_plain() or (self._dec is not None and not self._dec.idle()):
            raise CorruptPatch("data after the end of the patch")

    def _base_window(self, n):
        """Have the base bytes at the base position buffered; return how many of n are."""
        f = self._fpos
        if f < 0 or f >= self._bsize:
            raise CorruptPatch("patch reads outside the base image (offset %d)" % f)
        s = self._bstart
        bl = len(self._bbuf)
        if f < s or f >= s + bl:
            s = f if f + bl <= self._bsize else self._bsize - bl
            self.base.readblocks(s // self._bs, self._bbuf, s % self._bs)
            self._bstart = s
        self._st[2] = f - s
        avail = s + bl - f
        return n if n < avail else avail

    # ---- the output ----------------------------------------------------------------------
    def readinto(self, out):
        """Fill `out` with the next image bytes; return how many (fewer only at the end)."""
        end = len(out)
        o = 0
        st = self._st
        while o < end:
            ph = self._ph
            if ph == DIFF or ph == EXTRA:
                left = self._left
                if not left:
                    self._ph = ph + 1
                    continue
                if self._pp >= self._pe and not self._fill_plain():
                    raise self._truncated()
                n = min(left, end - o, self._pe - self._pp)
                st[0] = o
                st[1] = self._pp
                if ph == DIFF:
                    n = self._base_window(n)
                    st[3] = n
                    self._add(out, self._plain, self._bbuf, st)
                    self._fpos += n
                else:
                    st[3] = n
                    self._copy(out, self._plain, st)
                self._pp += n
                self._left = left - n
                self._pos += n
                o += n
            elif ph == DONE:
                break
            else:
                self._control()
        return o

    @property
    def done(self):
        return self._ph == DONE

    def check_base(self, running=None, expect=None):
        """Raise WrongBase unless the running image is this patch's base. The header's digest
        and `expect` (the offer's from-image SHA-256, hex or bytes) must each match `running`
        (the running image's digest; computed from `base` when None); at least one must exist."""
        named = [d for d in (self.base_sha256, _digest(expect, "from-image")) if d is not None]
        if not named:
            raise WrongBase("patch names no base image")
        if running is None:
            try:
                running = running_sha256(self.base)
            except app_image.ImageError as e:
                raise WrongBase("running image: %s" % e)
        running = _digest(running, "running image")
        for d in named:
            if d != running:
                raise WrongBase("patch is for another base image")

    def close(self):
        if hasattr(self.src, "close"):
            self.src.close()
