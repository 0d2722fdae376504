# ESP app image parsing and validation (ESP-IDF "App image format"), for OTA and boot.
#
# Image: 24-byte header (common 8 + extended 16), segments (u32 load address, u32 length, data),
# zero padding, a checksum byte that ends a 16-byte block (0xEF XOR all segment data), then a
# SHA-256 of everything before it when hash_appended is set.  The first (DROM) segment's data
# starts with the 256-byte esp_app_desc_t, so the descriptor sits at image offset 32.
#
# Partitions are esp32.Partition-like: readblocks(block, buf, offset), ioctl(4/5), info().
import struct
import hashlib

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


class ImageError(Exception):
    pass


class AppDesc:
    """The fields of esp_app_desc_t plus the image header facts callers need."""

    def __init__(self, buf):
        self.chip_id = buf[12] | (buf[13] << 8)
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


def check_header(buf, chip_id=CHIP_ESP32S3):
    """Validate the first DESC_END (288) bytes of an image; return its AppDesc or raise ImageError."""
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
    if buf[23] > 1:
        raise ImageError("bad hash_appended byte 0x%02x" % buf[23])
    seg_len = struct.unpack_from("<I", buf, HEADER_LEN + 4)[0]
    magic = struct.unpack_from("<I", buf, APP_DESC_OFFSET)[0]
    if seg_len < APP_DESC_LEN or magic != APP_DESC_MAGIC:
        raise ImageError("no esp_app_desc_t (magic 0x%08x)" % magic)
    return AppDesc(buf)


def _reader(partition):
    """Return read(offset, buf) for any byte offset, whatever the partition's block size: the
    port reads at n * block_size + offset (esp32_partition.c:200-205), so block 0 plus a byte
    offset is right for every block size -- also the 0 a uint16 makes of 65536."""
    def read(off, buf):
        partition.readblocks(0, buf, off)
    return read


def _part_size(partition):
    try:
        return partition.info()[3]
    except AttributeError:
        return partition.ioctl(4, 0) * partition.ioctl(5, 0)


def read_app_desc(partition, chip_id=CHIP_ESP32S3):
    """AppDesc of the image at the start of `partition`, or None when it holds no valid image."""
    buf = bytearray(DESC_END)
    _reader(partition)(0, buf)
    try:
        return check_header(buf, chip_id)
    except ImageError:
        return None


def _walk(read, size):
    """Return (end of segment data, hash_appended); raise ImageError if malformed."""
    hdr = bytearray(HEADER_LEN)
    read(0, hdr)
    if hdr[0] != IMAGE_MAGIC:
        raise ImageError("bad magic 0x%02x (want 0x%02x)" % (hdr[0], IMAGE_MAGIC))
    nseg = hdr[1]
    if nseg < 1 or nseg > MAX_SEGMENTS:
        raise ImageError("bad segment count %d" % nseg)
    seg = hdr[:SEG_HEADER_LEN]  # reuse as the segment-header buffer
    pos = HEADER_LEN
    for i in range(nseg):
        if pos + SEG_HEADER_LEN > size:
            raise ImageError("segment %d header at 0x%x runs past the partition" % (i, pos))
        read(pos, seg)
        n = struct.unpack_from("<I", seg, 4)[0]
        if n & 3:
            raise ImageError("segment %d length %d is not a multiple of 4" % (i, n))
        pos += SEG_HEADER_LEN + n
        if pos > size:
            raise ImageError("segment %d (%d bytes) runs past the partition" % (i, n))
    return pos, hdr[23] == 1


def _layout(partition):
    read = _reader(partition)
    size = _part_size(partition)
    data_end, hashed = _walk(read, size)
    body = (data_end + 16) & ~15  # checksum byte ends the 16-byte block after the data
    end = body + (DIGEST_LEN if hashed else 0)
    if end > size:
        raise ImageError("image (%d bytes) runs past the partition (%d bytes)" % (end, size))
    return read, data_end, body, hashed


def image_length(partition):
    """Total image length: header, segments, checksum padding and (if appended) the digest."""
    read, data_end, body, hashed = _layout(partition)
    return body + (DIGEST_LEN if hashed else 0)


def verify_digest(partition):
    """True iff the image's appended SHA-256 matches; False if it differs or none is appended.

    Raises ImageError when the image is structurally invalid."""
    read, data_end, body, hashed = _layout(partition)
    if not hashed:
        return False
    buf = bytearray(4096)
    mv = memoryview(buf)
    h = hashlib.sha256()
    pos = 0
    while pos < body:
        n = min(4096, body - pos)
        read(pos, mv[:n])
        h.update(mv[:n])
        pos += n
    read(body, mv[:DIGEST_LEN])
    return h.digest() == bytes(mv[:DIGEST_LEN])


def checksum(partition):
    """(stored, calculated) checksum bytes.  XORs the data in 4 KiB chunks as big ints, which is
    far faster than a per-byte loop in bytecode; the XOR of all bytes is order-independent."""
    read, data_end, body, hashed = _layout(partition)
    buf = bytearray(4096)
    mv = memoryview(buf)
    seg = bytearray(SEG_HEADER_LEN)
    hdr = bytearray(2)
    read(0, hdr)
    acc = 0
    pos = HEADER_LEN
    for _ in range(hdr[1]):
        read(pos, seg)
        n = struct.unpack_from("<I", seg, 4)[0]
        pos += SEG_HEADER_LEN
        end = pos + n
        while pos < end:
            k = min(4096, end - pos)
            read(pos, mv[:k])
            acc ^= int.from_bytes(mv[:k], "little")
            pos += k
    calc = CHECKSUM_MAGIC
    for b in acc.to_bytes(4096, "little"):
        calc ^= b
    read(body - 1, mv[:1])
    return buf[0], calc


def verify_image(partition, chip_id=CHIP_ESP32S3):
    """Full check as esp_image_verify does it: header, desc, segments, checksum, digest.

    Returns the AppDesc; raises ImageError with the reason otherwise."""
    buf = bytearray(DESC_END)
    _reader(partition)(0, buf)
    desc = check_header(buf, chip_id)
    stored, calc = checksum(partition)
    if stored != calc:
        raise ImageError("checksum 0x%02x does not match calculated 0x%02x" % (stored, calc))
    if desc.hash_appended and not verify_digest(partition):
        raise ImageError("SHA-256 digest does not match")
    return desc
