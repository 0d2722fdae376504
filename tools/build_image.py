#!/usr/bin/env python3
"""Build valid ESP32-S3 application images (the format esptool elf2image writes).

Layout of an image (ESP-IDF "App image format"):

    0   image header: magic 0xE9, segment count, SPI mode, size/freq byte, entry address (u32)
    8   extended header (16 bytes): wp pin 0xEE, drive strengths, chip id (u16 at image offset 12),
        min rev (legacy), min/max chip rev full (u16), 4 reserved, hash_appended (offset 23)
    24  segments: load address (u32), length (u32), data.  Segment 0 is DROM and its data starts
        with the 256-byte esp_app_desc_t, so the descriptor always sits at image offset 32.
    ..  zero padding so that the checksum byte (0xEF XOR every segment data byte) is the last
        byte of a 16-byte block
    ..  SHA-256 of everything before it (32 bytes) when hash_appended is 1

Segments after the first one hold deterministic pseudo-random bytes (from `seed`) so that
images of any size can be produced quickly.  With `size` given the image is exactly `size`
bytes, rounded up to a multiple of 16 (every valid image length is a multiple of 16); the
minimum is 352 bytes.  `seed % 4` also picks how many padding bytes precede the checksum.
With `payload` (bytes, e.g. the code of a real program) the IROM segment holds exactly that,
zero-padded to a multiple of 4, instead of filler; `size` cannot be combined with it.

Usage: python tools/build_image.py --version 1.2.3 [--size N] [--secure-version N] [--chip-id 9]
       [--project NAME] -o out.bin

--secure-version sets esp_app_desc_t.secure_version (anti-rollback: firmware/anti_rollback.py).
Sign the result with tools/sign_image.py.
"""
import argparse
import hashlib
import random
import struct
import sys

IMAGE_MAGIC = 0xE9
CHECKSUM_MAGIC = 0xEF
APP_DESC_MAGIC = 0xABCD5432
CHIP_ESP32S3 = 9
HEADER_LEN = 24          # common (8) + extended (16) header
SEG_HEADER_LEN = 8
APP_DESC_LEN = 256
DIGEST_LEN = 32
MMU_PAGE = 0x10000       # flash-mapped segments keep load address == file offset (mod 64 KiB)

SPI_MODE_DIO = 2
FLASH_16MB_80M = 0x4F    # high nibble: 16 MB, low nibble: 80 MHz
MAX_REV_FULL = 99        # ESP-IDF 5.x default for ESP32-S3 (v0.99)

# Load address bases esptool maps to ESP32-S3 memory types.
DROM_BASE = 0x3C000000
IROM_BASE = 0x42000000
DRAM_BASE = 0x3FC88000
IRAM_BASE = 0x40370000

# Default (size=None) segment sizes; DRAM/IRAM stay small whatever the total size.
DEFAULT_DROM = 4096
DEFAULT_IROM = 8192
DRAM_LEN = 1024
IRAM_LEN = 2048
N_SEGMENTS = 4
OVERHEAD = HEADER_LEN + N_SEGMENTS * SEG_HEADER_LEN


def _cstr(text, n):
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(raw) >= n:
        raise ValueError("%r does not fit in %d bytes (NUL included)" % (text, n))
    return raw + b"\0" * (n - len(raw))


def app_desc(version, project_name="micropython", time_="12:00:00", date="Nov 24 2026",
             idf_version="v5.2.2", elf_sha256=None, secure_version=0):
    """The 256-byte esp_app_desc_t."""
    if elf_sha256 is None:
        elf_sha256 = hashlib.sha256(("elf:%s:%s" % (project_name, version)).encode()).digest()
    if len(elf_sha256) != 32:
        raise ValueError("elf_sha256 must be 32 bytes")
    desc = struct.pack("<II8s", APP_DESC_MAGIC, secure_version, b"\0" * 8)
    desc += _cstr(version, 32) + _cstr(project_name, 32) + _cstr(time_, 16) + _cstr(date, 16)
    desc += _cstr(idf_version, 32) + bytes(elf_sha256)
    # min/max efuse block revision (u16 each), mmu_page_size (log2: 16 -> 64 KiB), reserved
    desc += struct.pack("<HHB", 0, 199, 16)
    return desc + b"\0" * (APP_DESC_LEN - len(desc))


def xor_bytes(data, acc=0):
    """XOR of all bytes of `data` (and `acc`), folding halves as big ints instead of looping."""
    data = bytes(data)
    while len(data) > 8:
        if len(data) & 1:
            acc ^= data[-1]
            data = data[:-1]
        half = len(data) // 2
        folded = int.from_bytes(data[:half], "little") ^ int.from_bytes(data[half:], "little")
        data = folded.to_bytes(half, "little")
    for b in data:
        acc ^= b
    return acc


def _split(payload, desc_len):
    """Split `payload` data bytes (a multiple of 4) over DROM, DRAM, IRAM, IROM."""
    small = min(DRAM_LEN + IRAM_LEN, max(0, payload - desc_len))
    dram = (small // 3) & ~3
    iram = (small - dram) & ~3
    rest = payload - dram - iram - desc_len
    irom = (rest // 2) & ~3
    drom = payload - dram - iram - irom
    return drom, dram, iram, irom


def _fill(rng, n):
    return rng.randbytes(n) if n else b""


def build_image(version, project_name="micropython", size=None, chip_id=CHIP_ESP32S3,
                elf_sha256=None, secure_version=0, idf_version="v5.2.2", date="Nov 24 2026",
                time_="12:00:00", seed=0, payload=None, min_rev_full=0, max_rev_full=MAX_REV_FULL):
    """Return a complete app image (bytes).  See the module docstring for the layout.
    min_rev_full / max_rev_full: the chip revisions (major * 100 + minor) it may run on."""
    desc = app_desc(version, project_name, time_, date, idf_version, elf_sha256, secure_version)
    code = None
    if payload is not None:
        if size is not None:
            raise ValueError("give size or payload, not both")
        code = bytes(payload) + b"\0" * (-len(payload) % 4)
        drom, dram, iram, irom = APP_DESC_LEN, DRAM_LEN, IRAM_LEN, len(code)
    elif size is None:
        drom, dram, iram, irom = DEFAULT_DROM, DRAM_LEN, IRAM_LEN, DEFAULT_IROM
    else:
        size = (int(size) + 15) & ~15
        # Segment data ends 1..16 bytes before the digest and segment lengths are multiples
        # of 4 (the bootloader rejects others), so padding + checksum is 4, 8, 12 or 16 bytes:
        # the seed picks which, so tests meet every case a real build can produce.
        tail = 4 * (1 + seed % 4)
        room = size - DIGEST_LEN - tail - OVERHEAD
        if room < APP_DESC_LEN:
            raise ValueError("size %d is too small (minimum %d)"
                             % (size, APP_DESC_LEN + OVERHEAD + 16 + DIGEST_LEN))
        drom, dram, iram, irom = _split(room, APP_DESC_LEN)

    rng = random.Random(seed)
    seg_data = [desc + _fill(rng, drom - APP_DESC_LEN), _fill(rng, dram), _fill(rng, iram),
                code if code is not None else _fill(rng, irom)]

    out = bytearray()
    out += struct.pack("<BBBBI", IMAGE_MAGIC, N_SEGMENTS, SPI_MODE_DIO, FLASH_16MB_80M,
                       IRAM_BASE + 0x4)
    # wp pin, 3 drive-strength bytes, chip id, legacy min rev, min/max rev full, reserved, hash
    out += struct.pack("<BBBBHBHH4sB", 0xEE, 0, 0, 0, chip_id, 0, min_rev_full, max_rev_full,
                       b"\0" * 4, 1)
    checksum = CHECKSUM_MAGIC
    for index, data in enumerate(seg_data):
        data_off = len(out) + SEG_HEADER_LEN
        if index == 0:
            addr = DROM_BASE + data_off               # 0x3C000020
        elif index == 1:
            addr = DRAM_BASE
        elif index == 2:
            addr = IRAM_BASE
        else:
            addr = IROM_BASE + data_off % MMU_PAGE    # mmap-able: same offset in the 64 KiB page
        out += struct.pack("<II", addr, len(data))
        out += data
        checksum = xor_bytes(data, checksum)
    out += b"\0" * (15 - len(out) % 16)
    out.append(checksum)
    out += hashlib.sha256(out).digest()
    if size is not None and len(out) != size:
        raise AssertionError("built %d bytes, wanted %d" % (len(out), size))
    return bytes(out)


def _u32(text):
    v = int(text, 0)
    if not 0 <= v <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError("must be 0..4294967295")
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description="Build a valid ESP32-S3 app image.")
    ap.add_argument("--version", required=True, help="esp_app_desc_t version string")
    ap.add_argument("--project", default="micropython", help="project name")
    ap.add_argument("--size", type=lambda s: int(s, 0), default=None,
                    help="total image size in bytes (rounded up to a multiple of 16)")
    ap.add_argument("--chip-id", type=int, default=CHIP_ESP32S3)
    ap.add_argument("--secure-version", type=_u32, default=0,
                    help="esp_app_desc_t.secure_version (anti-rollback), 0..4294967295")
    ap.add_argument("--min-rev-full", type=int, default=0, help="lowest chip revision, e.g. 1 = v0.1")
    ap.add_argument("--max-rev-full", type=int, default=MAX_REV_FULL, help="highest chip revision")
    ap.add_argument("--idf-version", default="v5.2.2")
    ap.add_argument("--elf-sha256", default=None, help="64 hex digits")
    ap.add_argument("--seed", type=int, default=0, help="seed of the filler data")
    ap.add_argument("--payload", help="file whose bytes make the IROM segment (instead of filler)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)
    elf = bytes.fromhex(args.elf_sha256) if args.elf_sha256 else None
    payload = None
    if args.payload:
        with open(args.payload, "rb") as f:
            payload = f.read()
    image = build_image(args.version, args.project, args.size, args.chip_id, elf,
                        args.secure_version, args.idf_version, seed=args.seed, payload=payload,
                        min_rev_full=args.min_rev_full, max_rev_full=args.max_rev_full)
    with open(args.output, "wb") as f:
        f.write(image)
    print("%s: %d bytes, version %s" % (args.output, len(image), args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
