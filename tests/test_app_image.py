"""App images: tools/build_image.py output checked by esptool, parsed by firmware/app_image.py
and firmware/image_scan.py running on the real MicroPython unix port."""
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, mpy_json
import build_image

ESPTOOL = os.path.join(os.path.dirname(sys.executable), "esptool")
MiB = 1024 * 1024

# A file-backed esp32.Partition fake: readblocks(block, buf, offset) like the real one, bytes
# past the end of the file read as erased flash (0xFF), accesses past `size` raise OSError.
FAKE = r'''
import json
from firmware import app_image, image_scan

class FilePartition:
    def __init__(self, path, size):
        self.f = open(path, "rb")
        self.f.seek(0, 2)
        self.flen = self.f.tell()
        self.size = size
    def info(self):
        return (0, 0x10, 0x20000, self.size, "ota_0", False)
    def ioctl(self, op, arg):
        if op == 4:
            return self.size // 4096
        if op == 5:
            return 4096
        return None
    def readblocks(self, block, buf, offset=0):
        a = block * 4096 + offset
        n = len(buf)
        if a < 0 or a + n > self.size:
            raise OSError("past partition end")
        got = 0
        if a < self.flen:
            self.f.seek(a)
            got = self.f.readinto(memoryview(buf)[:min(n, self.flen - a)])
        for i in range(got, n):
            buf[i] = 0xFF

def err(fn, *args):
    try:
        fn(*args)
    except app_image.ImageError as e:
        return str(e)
    return None
'''


def run_parser(code, path, size):
    return mpy_json(FAKE + "part = FilePartition(%r, %d)\n" % (str(path), size) + code)


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def esptool_info(path):
    proc = subprocess.run([ESPTOOL, "--chip", "esp32s3", "image-info", str(path)],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("size", [None, MiB])
def test_esptool_accepts_builder_output(tmp_path, size):
    elf = bytes(range(32))
    image = build_image.build_image("1.2.3", project_name="xiaozhi", size=size, elf_sha256=elf,
                                    secure_version=2, seed=7)
    if size is not None:
        assert len(image) == size
    path = write(tmp_path, "app.bin", image)
    rc, out = esptool_info(path)
    assert rc == 0, out
    assert "Chip ID: 9 (ESP32-S3)" in out
    assert re.search(r"Checksum: 0x[0-9a-f]{2} \(valid\)", out), out
    assert "Validation hash: %s (valid)" % hashlib.sha256(image[:-32]).hexdigest() in out
    assert "App version: 1.2.3" in out
    assert "Project name: xiaozhi" in out
    assert "ELF file SHA256: %s" % elf.hex() in out
    assert "Secure version: 2" in out
    segs = re.findall(r"^\s+\d+\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(.+)$", out, re.M)
    assert len(segs) == 4 and segs[0][0] == "3c000020" and segs[0][2].strip() == "DROM"
    assert "IROM" in segs[3][2]
    # flash-mapped segments keep load address == file offset (mod 64 KiB), as the bootloader needs
    for addr, offs, _ in (segs[0], segs[3]):
        assert int(addr, 16) % 0x10000 == (int(offs, 16) + 8) % 0x10000


def test_esptool_flags_corrupt_image(tmp_path):
    """The esptool checks above can fail: a flipped data byte shows as invalid."""
    image = bytearray(build_image.build_image("1.0.0", size=8192))
    image[4000] ^= 0x01
    rc, out = esptool_info(write(tmp_path, "bad.bin", bytes(image)))
    assert "Checksum" in out and "invalid" in out


@pytest.mark.parametrize("size,expect", [(400, 400), (4096, 4096), (100001, 100016),
                                         (3 * MiB + 16, 3 * MiB + 16)])
def test_sizes_exact_and_rounded_to_16(size, expect):
    image = build_image.build_image("9.9.9", size=size, seed=size)
    assert len(image) == expect
    assert image[-32:] == hashlib.sha256(image[:-32]).digest()


def test_builder_deterministic_and_seeded():
    a = build_image.build_image("1.0.0", size=65536, seed=1)
    assert a == build_image.build_image("1.0.0", size=65536, seed=1)
    assert a != build_image.build_image("1.0.0", size=65536, seed=2)
    with pytest.raises(ValueError):
        build_image.build_image("1.0.0", size=64)
    with pytest.raises(ValueError):
        build_image.build_image("x" * 32)  # version[32] needs its NUL


def test_xor_bytes_matches_naive():
    data = os.urandom(12345)
    naive = 0xEF
    for b in data:
        naive ^= b
    assert build_image.xor_bytes(data, 0xEF) == naive


def test_cli_writes_image(tmp_path):
    out = tmp_path / "cli.bin"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_image.py"),
                           "--version", "2.3.4", "--size", "20000", "--project", "demo",
                           "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == build_image.build_image("2.3.4", "demo", 20000)


def test_mpy_reads_desc_length_and_digest(tmp_path):
    elf = hashlib.sha256(b"some elf").digest()
    image = build_image.build_image("1.4.2-rc1", project_name="esp-box-3", size=200000,
                                    elf_sha256=elf, secure_version=5, idf_version="v5.2.2",
                                    date="Jan  2 2027", time_="03:04:05", seed=3)
    path = write(tmp_path, "app.bin", image)
    got = run_parser(
        "d = image_scan.read_app_desc(part)\n"
        "print(json.dumps({'desc': d.to_dict(), 'len': image_scan.image_length(part),"
        " 'digest': image_scan.verify_digest(part),"
        " 'full': image_scan.verify_image(part).version}))\n", path, 0x40000)
    assert got["desc"] == {"version": "1.4.2-rc1", "project_name": "esp-box-3",
                           "time": "03:04:05", "date": "Jan  2 2027", "idf_ver": "v5.2.2",
                           "elf_sha256": elf.hex(), "secure_version": 5, "chip_id": 9,
                           "hash_appended": True}
    assert got["len"] == len(image)
    assert got["digest"] is True
    assert got["full"] == "1.4.2-rc1"


def test_mpy_one_mib_image(tmp_path):
    image = build_image.build_image("3.0.0", size=MiB, seed=11)
    path = write(tmp_path, "big.bin", image)
    got = run_parser(
        "print(json.dumps([image_scan.image_length(part), image_scan.verify_digest(part),"
        " image_scan.checksum(part)[0] == image_scan.checksum(part)[1]]))\n", path, 2 * MiB)
    assert got == [MiB, True, True]


def test_mpy_flipped_byte_fails_digest(tmp_path):
    image = bytearray(build_image.build_image("1.0.0", size=50000))
    image[30000] ^= 0x40                      # inside segment data
    bad_data = write(tmp_path, "bad_data.bin", bytes(image))
    image[30000] ^= 0x40
    image[-1] ^= 0x01                         # inside the stored digest
    bad_digest = write(tmp_path, "bad_digest.bin", bytes(image))
    code = ("print(json.dumps([image_scan.verify_digest(part), err(image_scan.verify_image, part),"
            " image_scan.image_length(part)]))\n")
    digest_ok, reason, length = run_parser(code, bad_data, 0x10000)
    assert digest_ok is False and "checksum" in reason and length == 50000
    digest_ok, reason, _ = run_parser(code, bad_digest, 0x10000)
    assert digest_ok is False and "digest" in reason


def test_mpy_rejects_bad_headers(tmp_path):
    good = build_image.build_image("1.0.0", size=4096)
    bad_magic = bytearray(good)
    bad_magic[0] = 0xE8
    no_desc = bytearray(good)
    no_desc[32:36] = b"\0\0\0\0"
    wrong_chip = build_image.build_image("1.0.0", size=4096, chip_id=2)
    cases = {"bad_magic": bad_magic, "no_desc": no_desc, "wrong_chip": wrong_chip,
             "erased": b"\xff" * 4096}
    results = {}
    for name, data in cases.items():
        path = write(tmp_path, name + ".bin", bytes(data))
        results[name] = run_parser(
            "f = open(%r, 'rb'); buf = f.read(288)\n"
            "print(json.dumps([err(app_image.check_header, buf),"
            " image_scan.read_app_desc(part) is None]))\n" % str(path), path, 0x10000)
    assert results["bad_magic"] == ["bad magic 0xe8 (want 0xe9)", True]
    assert results["wrong_chip"] == ["chip id 2 is not ESP32-S3 (9)", True]
    assert results["no_desc"][0].startswith("no esp_app_desc_t") and results["no_desc"][1]
    assert results["erased"] == ["bad magic 0xff (want 0xe9)", True]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mpy_length_for_every_checksum_padding(tmp_path, seed):
    """seed % 4 moves the end of segment data to each 4-byte slot before the checksum byte."""
    image = build_image.build_image("1.0.0", size=5008, seed=seed)
    path = write(tmp_path, "app.bin", image)
    assert run_parser("print(json.dumps([image_scan.image_length(part),"
                      " image_scan.verify_digest(part), image_scan.verify_image(part).version]))\n",
                      path, 0x10000) == [5008, True, "1.0.0"]


def test_mpy_image_past_partition_end(tmp_path):
    image = build_image.build_image("1.0.0", size=3 * 4096)
    path = write(tmp_path, "app.bin", image)
    code = "print(json.dumps(err(image_scan.image_length, part)))\n"
    assert "runs past the partition" in run_parser(code, path, 2 * 4096)
    assert run_parser(code, path, 3 * 4096) is None  # exactly fits


def test_mpy_checksum_native_and_fallback_agree(tmp_path):
    """The one-pass verify XORs segment data with a viper helper on ports that have a native
    emitter (the unix port does) and with big ints elsewhere; both give esptool's checksum."""
    image = bytearray(build_image.build_image("1.0.0", size=300000, seed=5))
    image[70001] ^= 0x5A                       # breaks the checksum: both must see it
    path = write(tmp_path, "app.bin", bytes(image))
    got = run_parser(
        "native = image_scan._xor is image_scan._xor_native\n"
        "a = image_scan.checksum(part)\n"
        "image_scan._xor = image_scan._xor_big\n"
        "b = image_scan.checksum(part)\n"
        "print(json.dumps([native, a, b]))\n", path, 0x80000)
    native, a, b = got
    assert native is True
    assert a == b and a[0] != a[1]
    _, out = esptool_info(path)                # the oracle: esptool's own calculation
    m = re.search(r"Checksum: 0x([0-9a-f]{2}) \(invalid - calculated 0x([0-9a-f]{2})\)", out)
    assert m, out
    assert a == [int(m.group(1), 16), int(m.group(2), 16)]


def test_mpy_stream_length_matches_the_flash_walk(tmp_path):
    """StreamLength (the image's length learnt while it streams, for the signature check) gives
    what image_length reads from flash, whatever the chunking; non-images give an error."""
    paths = []
    for i, size in enumerate([None, 352, 4096, 100000, 300 * 1024 + 48]):
        p = write(tmp_path, "img%d.bin" % i, build_image.build_image("1.0.%d" % i, size=size, seed=i)
                  + b"\xff" * 5000)  # padding and more after the image: not part of its length
        paths.append(str(p))
    paths.append(str(write(tmp_path, "junk.bin", b"\xe9\x00" + bytes(5000))))
    paths.append(str(write(tmp_path, "text.bin", b"hello" * 1000)))
    got = mpy_json(FAKE + r'''
out = []
for path in json.loads(%r):
    try:
        want = image_scan.image_length(FilePartition(path, 1 << 20))
    except app_image.ImageError:
        want = None
    data = open(path, "rb").read()
    row = [want]
    for chunk in (1, 7, 24, 4096, 65536):
        w = app_image.StreamLength()
        for off in range(0, len(data), chunk):
            w.feed(off, memoryview(data)[off:off + chunk])
        row.append(w.length if w.error is None else w.error)
    out.append(row)
print(json.dumps(out))
''' % json.dumps(paths))
    lengths = [os.path.getsize(p) - 5000 for p in paths[:5]]
    for row, n in zip(got[:5], lengths):
        assert row == [n] * 6, row
    assert got[5] == [None] + ["not an app image"] * 5
    assert got[6] == [None] + ["not an app image"] * 5


def test_chip_revision_fields_as_esptool_reads_them_and_esp_idf_checks_them(tmp_path):
    # esptool (the format's own tool) confirms where the builder put min/max_chip_rev_full; the
    # rules are ESP-IDF's bootloader_common_check_chip_revision_validity: min <= chip, and
    # chip <= max unless max is unset (0 or 0xFFFF) or DISABLE_WAFER_VERSION_MAJOR is burnt.
    path = write(tmp_path, "rev.bin", build_image.build_image("1.0.0", min_rev_full=999,
                                                              max_rev_full=1))
    rc, out = esptool_info(path)
    assert rc == 0, out
    assert "Minimal chip revision: v9.99" in out and "Maximal chip revision: v0.1" in out
    cases = [(999, 99, 2, False), (0, 1, 2, False), (2, 2, 2, False), (0, 0, 2, False),
             (0, 0xFFFF, 300, False), (0, 1, 2, True), (3, 99, 2, True), (0, 99, 109, False)]
    heads = [build_image.build_image("1.0.0", min_rev_full=lo, max_rev_full=hi)[:288].hex()
             for lo, hi, _, _ in cases]
    res = mpy_json("""
import json, binascii
from firmware import app_image
out = []
for head, (lo, hi, rev, ignore_max) in zip(%r, %r):
    app_image.set_chip_revision(rev, ignore_max)
    try:
        app_image.check_header(binascii.unhexlify(head))
        out.append(None)
    except app_image.ImageError as e:
        out.append(str(e))
print(json.dumps(out))
""" % (heads, cases))
    assert res == ["needs chip revision >= v9.99, this chip is v0.2",
                   "needs chip revision <= v0.1, this chip is v0.2",
                   None, None, None, None,                 # in range, unset max (0 / 0xFFFF), fuse
                   "needs chip revision >= v0.3, this chip is v0.2",
                   "needs chip revision <= v0.99, this chip is v1.9"]
