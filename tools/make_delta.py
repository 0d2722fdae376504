#!/usr/bin/env python3
"""Make a delta-update patch: a detools sequential patch from the running image to the new one,
behind the esp_delta_ota header, exactly as Espressif's esp_delta_ota_patch_gen.py makes them.

    python tools/make_delta.py BASE.bin NEW.bin -o PATCH.bin [--compression heatshrink|none|crle]
                               [--no-header] [--window-bits 8] [--lookahead-bits 7]

The header (64 bytes): magic 0xFCCDDE10 (u32 little-endian), the base image's SHA-256 as
esptool's image_info shows it ("Validation Hash", the digest appended to the image; what the
device's esp_partition_get_sha256 returns), 28 zero bytes. The patch itself comes from the real
`detools` package (PyPI) and is checked by applying it with detools before it is written.
"""
import argparse
import hashlib
import io
import struct
import sys

import detools
from esptool.bin_image import LoadFirmwareImage

ESP_DELTA_MAGIC = 0xFCCDDE10  # sha256("esp_delta_ota")[:4], per esp_delta_ota_patch_gen.py
HEADER_LEN = 64
COMPRESSIONS = ("heatshrink", "none", "crle")
# heatshrink's encoder (heatshrink2 0.15.0, heatshrink_encoder.c do_indexing/find_longest_match)
# keeps its match index in int16_t over a buffer of 2 << window_bits bytes. With window_bits 15
# the positions from 32768 up wrap negative, the search reads before its buffer, and the output
# varies from run to run or the encoder never returns. The format (and our decoder) allow 15;
# the reference encoder is only sound up to 14.
MAX_WINDOW_BITS = 14


class DeltaToolError(Exception):
    pass


def base_digest(image, chip="esp32s3"):
    """The SHA-256 esp_delta_ota puts in the header: the image's appended (and valid) digest."""
    img = LoadFirmwareImage(chip, bytes(image))
    if not img.append_digest:
        raise DeltaToolError("base image has no appended SHA-256 (esp_delta_ota needs one)")
    if img.stored_digest != img.calc_digest:
        raise DeltaToolError("base image's appended SHA-256 does not match its contents")
    return img.stored_digest


def esp_header(digest):
    return struct.pack("<I", ESP_DELTA_MAGIC) + digest + bytes(HEADER_LEN - 4 - len(digest))


def make_patch(base, new, compression="heatshrink", window_bits=8, lookahead_bits=7):
    """The bare detools sequential patch (bytes) from `base` to `new`, checked with detools."""
    if compression not in COMPRESSIONS:
        raise DeltaToolError("compression must be one of %s" % ", ".join(COMPRESSIONS))
    if compression == "heatshrink" and not (4 <= window_bits <= MAX_WINDOW_BITS
                                            and 3 <= lookahead_bits < window_bits):
        raise DeltaToolError("heatshrink needs 4 <= window bits <= %d (heatshrink's encoder indexes "
                             "its buffer with int16_t) and 3 <= lookahead bits < window bits"
                             % MAX_WINDOW_BITS)
    out = io.BytesIO()
    detools.create_patch(io.BytesIO(base), io.BytesIO(new), out, compression=compression,
                         patch_type="sequential", heatshrink_window_sz2=window_bits,
                         heatshrink_lookahead_sz2=lookahead_bits)
    patch = out.getvalue()
    check = io.BytesIO()
    detools.apply_patch(io.BytesIO(base), io.BytesIO(patch), check)
    if check.getvalue() != new:
        raise DeltaToolError("detools' own apply does not reproduce the new image")
    return patch


def make_delta(base, new, compression="heatshrink", header=True, window_bits=8, lookahead_bits=7,
               chip="esp32s3"):
    """The patch file: esp_delta_ota header (unless header=False) + detools patch."""
    patch = make_patch(base, new, compression, window_bits, lookahead_bits)
    return (esp_header(base_digest(base, chip)) if header else b"") + patch


def from_files(base_path, new_path, compression="heatshrink"):
    """(base SHA-256 hex, patch file bytes) for two image files: what an offer names."""
    with open(base_path, "rb") as f:
        base = f.read()
    with open(new_path, "rb") as f:
        new = f.read()
    return base_digest(base).hex(), make_delta(base, new, compression)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="the image the device runs now")
    ap.add_argument("new", help="the image to update to")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--compression", default="heatshrink", choices=COMPRESSIONS)
    ap.add_argument("--no-header", action="store_true", help="leave out the esp_delta_ota header")
    ap.add_argument("--window-bits", type=int, default=8, help="heatshrink window (4..%d)" % MAX_WINDOW_BITS)
    ap.add_argument("--lookahead-bits", type=int, default=7, help="heatshrink lookahead (3..window-1)")
    ap.add_argument("--chip", default="esp32s3")
    args = ap.parse_args(argv)
    with open(args.base, "rb") as f:
        base = f.read()
    with open(args.new, "rb") as f:
        new = f.read()
    try:
        data = make_delta(base, new, args.compression, not args.no_header, args.window_bits,
                          args.lookahead_bits, args.chip)
    except (DeltaToolError, detools.Error) as e:
        print("make_delta: %s" % e, file=sys.stderr)
        return 1
    with open(args.output, "wb") as f:
        f.write(data)
    print("%s: %d bytes (%.4f of the %d-byte image), %s, sha256 %s"
          % (args.output, len(data), len(data) / len(new), len(new), args.compression,
             hashlib.sha256(data).hexdigest()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
