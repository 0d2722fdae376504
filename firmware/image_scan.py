# An ESP app image stored on a partition, read back the way the bootloader reads it: its
# descriptor, total length, checksum, SHA-256, and esp_image_verify's full check in one pass.
# The format itself (header, esp_app_desc_t, chip checks) is firmware/app_image.py's.
#
# Partitions are esp32.Partition-like: readblocks(block, buf, offset), ioctl(4/5), info().
import struct
import hashlib

from firmware.app_image import CHECKSUM_MAGIC, CHIP_ESP32S3, DESC_END, DIGEST_LEN, HEADER_LEN
from firmware.app_image import IMAGE_MAGIC, MAX_SEGMENTS, SEG_HEADER_LEN
from firmware.app_image import ImageError, body_end, check_header


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
    """([(data start, data end)] of each segment, hash_appended); raise ImageError if malformed."""
    hdr = bytearray(HEADER_LEN)
    read(0, hdr)
    if hdr[0] != IMAGE_MAGIC:
        raise ImageError("bad magic 0x%02x (want 0x%02x)" % (hdr[0], IMAGE_MAGIC))
    nseg = hdr[1]
    if nseg < 1 or nseg > MAX_SEGMENTS:
        raise ImageError("bad segment count %d" % nseg)
    seg = hdr[:SEG_HEADER_LEN]  # reuse as the segment-header buffer
    segs = []
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
        segs.append((pos - n, pos))
    return segs, hdr[23] == 1


def _layout(partition):
    read = _reader(partition)
    size = _part_size(partition)
    segs, hashed = _walk(read, size)
    body = body_end(segs[-1][1])
    end = body + (DIGEST_LEN if hashed else 0)
    if end > size:
        raise ImageError("image (%d bytes) runs past the partition (%d bytes)" % (end, size))
    return read, segs, body, hashed


def image_length(partition):
    """Total image length: header, segments, checksum padding and (if appended) the digest."""
    read, segs, body, hashed = _layout(partition)
    return body + (DIGEST_LEN if hashed else 0)


def _xor_big(buf, a, b):
    return int.from_bytes(memoryview(buf)[a:b], "little")


def _xor_native(buf, a, b):
    return _xor_words(buf, a >> 2, b >> 2) & 0xFFFFFFFF


try:  # the checksum's inner loop, native where the port has an emitter
    from firmware.xor32 import xor_words as _xor_words
    _xor = _xor_native
except Exception:
    _xor = _xor_big


def _scan(partition, checksum=True, sha=True):
    """One pass over the image as esp_image_verify makes it: (stored checksum byte, calculated
    checksum, SHA-256 of everything before the digest, the appended digest or None)."""
    read, segs, body, hashed = _layout(partition)
    buf = bytearray(4096)
    mv = memoryview(buf)
    h = hashlib.sha256() if sha else None
    acc = 0
    si = 0
    pos = 0
    while pos < body:
        k = min(4096, body - pos)
        chunk = buf if k == 4096 else mv[:k]
        read(pos, chunk)
        if h is not None:
            h.update(chunk)
        top = pos + k
        while checksum and si < len(segs) and segs[si][0] < top:
            s, e = segs[si]  # segment data: word aligned, so is every piece of it here
            a = s if s > pos else pos
            b = e if e < top else top
            if a < b:
                acc ^= _xor(buf, a - pos, b - pos)
            if e > top:
                break
            si += 1
        pos = top
    calc = CHECKSUM_MAGIC
    while acc:
        calc ^= acc & 0xFF
        acc >>= 8
    read(body - 1, mv[:1])
    stored = buf[0]
    appended = None
    if hashed:
        read(body, mv[:DIGEST_LEN])
        appended = bytes(mv[:DIGEST_LEN])
    return stored, calc, (h.digest() if h is not None else None), appended


def verify_digest(partition):
    """True iff the image's appended SHA-256 matches; False if it differs or none is appended.

    Raises ImageError when the image is structurally invalid."""
    _, _, digest, appended = _scan(partition, checksum=False)
    return appended is not None and digest == appended


def app_sha256(partition):
    """The image digest ESP-IDF's esp_partition_get_sha256 gives for an app partition, which
    esp_delta_ota compares with a patch's base (bootloader_common_get_sha256_of_partition): the
    appended SHA-256, checked against the bytes before it; without one, the SHA-256 of the whole
    image. Both hash the same bytes (everything up to the checksum block's end).

    Raises ImageError when the image is invalid or its appended digest does not match."""
    _, _, digest, appended = _scan(partition, checksum=False)
    if appended is not None and digest != appended:
        raise ImageError("SHA-256 digest does not match")
    return digest


def checksum(partition):
    """(stored, calculated) checksum bytes: 0xEF XOR every byte of segment data (XORed as 32-bit
    words: the XOR of all bytes is the XOR of the words' four bytes)."""
    stored, calc, _, _ = _scan(partition, sha=False)
    return stored, calc


def verify_image(partition, chip_id=CHIP_ESP32S3):
    """Full check as esp_image_verify does it: header, desc, segments, checksum, digest -- in
    one pass over the image.

    Returns the AppDesc; raises ImageError with the reason otherwise."""
    buf = bytearray(DESC_END)
    _reader(partition)(0, buf)
    desc = check_header(buf, chip_id)
    stored, calc, digest, appended = _scan(partition, sha=desc.hash_appended)
    if stored != calc:
        raise ImageError("checksum 0x%02x does not match calculated 0x%02x" % (stored, calc))
    if desc.hash_appended and digest != appended:
        raise ImageError("SHA-256 digest does not match")
    return desc
