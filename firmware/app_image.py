# ESP app image parsing and validation (ESP-IDF "App image format"), for OTA and boot.
#
# Image: 24-byte header (common 8 + extended 16), segments (u32 load address, u32 length, data),
# zero padding, a checksum byte that ends a 16-byte block (0xEF XOR all segment data), then a
# SHA-256 of everything before it when hash_appended is set.  The first (DROM) segment's data
# starts with the 256-byte esp_app_desc_t, so the descriptor sits at image offset 32.
#
# This module works on bytes (a header buffer, a download as it streams past); reading an image
# stored on a partition (esp32.Partition-like) is firmware/image_scan.py's, so the header checks
# load without the scanner.
import struct

IMAGE_MAGIC = 0xE9
CHECKSUM_MAGIC = 0xEF
CHIP_ESP32S3 = 9
APP_DESC_MAGIC = 0xABCD5432
HEADER_LEN = 24
SEG_HEADER_LEN = 8
APP_DESC_OFFSET = HEADER_LEN + SEG_HEADER_LEN  # 32
APP_DESC_LEN = 256
DESC_END = APP_DESC_OFFSET + APP_DESC_LEN  # 288: bytes check_header needs
DIGEST_LEN = 32
MAX_SEGMENTS = 16  # ESP_IMAGE_MAX_SEGMENTS

_CHIP_NAMES = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2",
               13: "ESP32-C6", 16: "ESP32-H2", 18: "ESP32-P4"}

# The chip's revision (major * 100 + minor) and whether efuse DISABLE_WAFER_VERSION_MAJOR is
# burnt, set by the board at power-on (set_chip_revision); None: unknown, not checked.
_chip_rev = None
_ignore_max_rev = False


class ImageError(Exception):
    pass


class AppDesc:
    """The fields of esp_app_desc_t plus the image header facts callers need."""

    def __init__(self, buf):
        self.chip_id = buf[12] | (buf[13] << 8)
        self.min_chip_rev_full, self.max_chip_rev_full = struct.unpack_from("<HH", buf, 15)
        self.hash_appended = buf[23] == 1
        o = APP_DESC_OFFSET
        self.secure_version = struct.unpack_from("<I", buf, o + 4)[0]
        self.version = _cstr(buf, o + 16, 32)
        self.project_name = _cstr(buf, o + 48, 32)
        self.time = _cstr(buf, o + 80, 16)
        self.date = _cstr(buf, o + 96, 16)
        self.idf_ver = _cstr(buf, o + 112, 32)
        self.elf_sha256 = bytes(buf[o + 144:o + 176])

    def to_dict(self):
        return {"version": self.version, "project_name": self.project_name, "time": self.time,
                "date": self.date, "idf_ver": self.idf_ver,
                "elf_sha256": "".join("%02x" % b for b in self.elf_sha256),
                "secure_version": self.secure_version, "chip_id": self.chip_id,
                "hash_appended": self.hash_appended}

    def __repr__(self):
        return "<AppDesc %s %s>" % (self.project_name, self.version)


def _cstr(buf, off, n):
    s = bytes(buf[off:off + n])
    end = s.find(b"\0")
    if end >= 0:
        s = s[:end]
    try:
        return s.decode()
    except UnicodeError:  # garbage in a header field must not crash the caller
        return "".join(chr(c) if 32 <= c < 127 else "?" for c in s)


def _chip_name(chip_id):
    return _CHIP_NAMES.get(chip_id, "unknown chip")


def set_chip_revision(revision, ignore_max=False):
    """The running chip's revision, for every later check_header (the board calls this)."""
    global _chip_rev, _ignore_max_rev
    _chip_rev = revision
    _ignore_max_rev = bool(ignore_max)


def _rev(r):
    return "v%d.%d" % (r // 100, r % 100)


def check_chip_revision(buf, revision, ignore_max=False):
    """ESP-IDF bootloader_support/src/bootloader_common_loader.c, check_chip_revision_validity
    (lines 36-65) as check_chip_validity runs it for an app image (lines 118-143): refuse
    min_chip_rev_full > revision, and revision > max_chip_rev_full unless that field is unset
    (0 or 0xFFFF: IS_FIELD_SET, line 32) or DISABLE_WAFER_VERSION_MAJOR is burnt."""
    lo, hi = struct.unpack_from("<HH", buf, 15)
    if lo > revision:  # ESP_CHIP_REV_ABOVE(rev, min_rev) is min_rev <= rev (soc/chip_revision.h)
        raise ImageError("needs chip revision >= %s, this chip is %s" % (_rev(lo), _rev(revision)))
    if hi not in (0, 0xFFFF) and revision > hi and not ignore_max:
        raise ImageError("needs chip revision <= %s, this chip is %s" % (_rev(hi), _rev(revision)))


def check_header(buf, chip_id=CHIP_ESP32S3, chip_rev=None):
    """Validate the first DESC_END (288) bytes of an image; return its AppDesc or raise ImageError.
    chip_rev: the chip revision to check against (default: set_chip_revision's)."""
    if len(buf) < DESC_END:
        raise ImageError("header too short (%d < %d bytes)" % (len(buf), DESC_END))
    if buf[0] != IMAGE_MAGIC:
        raise ImageError("bad magic 0x%02x (want 0x%02x)" % (buf[0], IMAGE_MAGIC))
    nseg = buf[1]
    if nseg < 1 or nseg > MAX_SEGMENTS:
        raise ImageError("bad segment count %d" % nseg)
    got = buf[12] | (buf[13] << 8)
    if got != chip_id:
        raise ImageError("chip id %d is not %s (%d)" % (got, _chip_name(chip_id), chip_id))
    rev = _chip_rev if chip_rev is None else chip_rev
    if rev is not None:
        check_chip_revision(buf, rev, _ignore_max_rev)
    if buf[23] > 1:
        raise ImageError("bad hash_appended byte 0x%02x" % buf[23])
    seg_len = struct.unpack_from("<I", buf, HEADER_LEN + 4)[0]
    magic = struct.unpack_from("<I", buf, APP_DESC_OFFSET)[0]
    if seg_len < APP_DESC_LEN or magic != APP_DESC_MAGIC:
        raise ImageError("no esp_app_desc_t (magic 0x%08x)" % magic)
    return AppDesc(buf)


def body_end(data_end):
    """Where the checksum block ends, given where the last segment's data ends."""
    return (data_end + 16) & ~15  # the checksum byte ends the 16-byte block after the data


class StreamLength:
    """An image's total length learnt from its bytes as they stream past (the walk
    image_scan._walk does on flash): feed(off, data) with consecutive pieces; .length is known
    once the last segment header has gone by, which is always before the image ends. .error
    says why it never will be (not an app image). Reads only the headers, into one 24-byte
    scratch buffer."""

    def __init__(self):
        self.length = None
        self.error = None
        self._hdr = bytearray(HEADER_LEN)
        self._at = 0          # stream offset of the header being gathered
        self._need = HEADER_LEN
        self._got = 0
        self._left = None     # segments still to walk
        self._hashed = False

    def feed(self, off, data):
        end = off + len(data)
        while self.length is None and self.error is None:
            pos = self._at + self._got
            if pos >= end:
                return
            take = min(self._need - self._got, end - pos)
            i = pos - off
            self._hdr[self._got:self._got + take] = data[i:i + take]
            self._got += take
            if self._got == self._need:
                self._header_done()

    def _header_done(self):
        h = self._hdr
        if self._left is None:  # the image header
            if h[0] != IMAGE_MAGIC or not 1 <= h[1] <= MAX_SEGMENTS:
                self.error = "not an app image"
                return
            self._left = h[1]
            self._hashed = h[23] == 1
            self._at = HEADER_LEN
        else:                   # a segment header: skip its data
            n = struct.unpack_from("<I", h, 4)[0]
            if n & 3:
                self.error = "segment length %d is not a multiple of 4" % n
                return
            self._at += SEG_HEADER_LEN + n
            self._left -= 1
            if not self._left:
                self.length = body_end(self._at) + (DIGEST_LEN if self._hashed else 0)
                return
        self._need = SEG_HEADER_LEN
        self._got = 0

