"""The image's own checksum and appended SHA-256 checked on the stream (firmware/update/
image_check.py), under the real micropython binary. Oracle: esptool image-info says which
images are valid; the stage must agree with it on every variant, whatever the chunking."""
import hashlib
import json
import os
import re
import struct
import subprocess
import sys

import pytest

import build_image
from conftest import mpy_json
from image_server import ImageServer

ESPTOOL = os.path.join(os.path.dirname(sys.executable), "esptool")

CHECK = r"""
import json
from firmware.update.image_check import ImageCheck
from firmware.update.errors import UpdateError
out = []
for path in PATHS:
    data = open(path, "rb").read()
    res = []
    for chunk in (4096, 1024, 1000):    # 1000: pieces that are not word aligned
        c = ImageCheck()
        for i in range(0, len(data), chunk):
            c.update(memoryview(data)[i:i + chunk])
        try:
            c.finish(len(data))
            res.append(None)
        except UpdateError as e:
            res.append([e.code, e.reason])
    out.append(res)
print(json.dumps(out))
"""


def esptool_verdict(path):
    out = subprocess.run([ESPTOOL, "--chip", "esp32s3", "image-info", str(path)],
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    checksum = re.search(r"Checksum: 0x[0-9a-f]{2} \((valid|invalid)", text)
    digest = re.search(r"Validation hash: [0-9a-f]{64} \((valid|invalid)", text)
    return (checksum.group(1) if checksum else None, digest.group(1) if digest else None)


def _variants():
    out = {}
    for seed in range(4):                       # every padding length before the checksum
        out["good-%d" % seed] = bytes(build_image.build_image("1.1.0", size=70000 + seed * 16,
                                                              seed=seed))
    img = build_image.build_image("1.1.0", size=40000, seed=1)
    out["good-default"] = build_image.build_image("1.1.0")
    b = bytearray(img)
    b[20000] ^= 1                               # segment data: both fields break
    out["data-bit"] = bytes(b)
    b = bytearray(img)
    b[-5] ^= 0x80                               # the appended digest itself
    out["digest-bit"] = bytes(b)
    b = bytearray(img)
    b[-33] ^= 1                                 # the checksum byte, digest recomputed over it
    b[-32:] = hashlib.sha256(bytes(b[:-32])).digest()
    out["checksum-only"] = bytes(b)
    b = bytearray(img[:-32])
    b[23] = 0                                   # hash_appended off: the checksum alone
    out["no-digest"] = bytes(b)
    b[10000] ^= 4
    out["no-digest-data-bit"] = bytes(b)
    out["signed-tail"] = img + b"\x5a" * 4096   # a signature sector after the image: ignored
    return out


def test_stream_check_agrees_with_esptool(tmp_path):
    variants = _variants()
    paths = []
    for name, data in variants.items():
        p = tmp_path / (name + ".bin")
        p.write_bytes(data)
        paths.append(str(p))
    got = mpy_json(("PATHS = %r\n" % paths) + CHECK)
    verdicts = {}
    for name, path, res in zip(variants, paths, got):
        assert res[0] == res[1] == res[2], (name, res)   # chunking does not matter
        verdicts[name] = (esptool_verdict(path) if name != "signed-tail" else None, res[0])
    for name in ("good-0", "good-1", "good-2", "good-3", "good-default"):
        assert verdicts[name] == (("valid", "valid"), None), name
    assert verdicts["data-bit"] == (("invalid", "invalid"), [-2, "image digest does not verify"])
    assert verdicts["digest-bit"] == (("valid", "invalid"), [-2, "image digest does not verify"])
    e, r = verdicts["checksum-only"]
    assert e == ("invalid", "valid") and r[0] == -2 and "checksum does not verify" in r[1]
    assert verdicts["no-digest"] == (("valid", None), None)
    e, r = verdicts["no-digest-data-bit"]
    assert e == ("invalid", None) and r[0] == -2 and "checksum does not verify" in r[1]
    assert verdicts["signed-tail"][1] is None


def test_a_short_stream_is_refused():
    img = build_image.build_image("1.1.0", size=9000)
    got = mpy_json(r"""
import json
from firmware.update.image_check import ImageCheck
from firmware.update.errors import UpdateError
data = open(%r, "rb").read()
c = ImageCheck()
c.update(data[:-16])
try:
    c.finish(len(data) - 16)
    print(json.dumps(None))
except UpdateError as e:
    print(json.dumps([e.code, e.reason]))
""" % _write("/tmp", "p15-short.bin", img))
    assert got == [-2, "image needs %d bytes, got %d" % (len(img), len(img) - 16)]


def _write(folder, name, data):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


INSTALL = r"""
import json
from firmware.board import sim
from firmware import updater
b = sim.Board({})
calls = []
orig = b.Partition.set_boot
def set_boot(self):
    calls.append(self.info()[4])
    return orig(self)
b.Partition.set_boot = set_boot
try:
    updater.install(b, updater.Offer(**json.loads(%r)), "1.0.0")
    out = {"ok": True}
except updater.UpdateError as e:
    out = {"ok": False, "code": e.code, "reason": e.reason}
out["set_boot"] = calls
out["boot"] = b.Partition(b.Partition.BOOT).info()[4]
print(json.dumps(out))
"""


@pytest.fixture
def server():
    s = ImageServer()
    yield s
    s.stop()


@pytest.mark.parametrize("corrupt", [True, False])
def test_a_corrupt_image_is_refused_before_the_boot_switch(sim_root, server, corrupt):
    img = bytearray(build_image.build_image("1.1.0", size=150000, seed=3))
    if corrupt:
        img[100000] ^= 0x10                      # the server's md5 is of the corrupt file
    server.files["/fw.bin"] = bytes(img)
    offer = {"url": server.url("/fw.bin"), "version": "1.1.0", "size": len(img),
             "md5": hashlib.md5(img).hexdigest()}
    got = mpy_json(INSTALL % json.dumps(offer), cwd=sim_root)
    if corrupt:
        assert got == {"ok": False, "code": -2, "reason": "image digest does not verify",
                       "set_boot": [], "boot": "ota_0"}
    else:
        assert got == {"ok": True, "set_boot": ["ota_1"], "boot": "ota_1"}


def test_steady_state_allocates_nothing(tmp_path):
    img = build_image.build_image("1.1.0", size=1024 * 1024, seed=2)
    path = tmp_path / "img.bin"
    path.write_bytes(img)
    got = mpy_json(r"""
import array, gc, io, json
from firmware.update.image_check import ImageCheck
src = io.BytesIO(open(%r, "rb").read())
buf = bytearray(4096)
marks = array.array("q", [0] * 257)
c = ImageCheck()
gc.collect()
gc.disable()
k = 0
while src.readinto(buf):
    marks[k] = gc.mem_alloc()
    c.update(buf)
    k += 1
marks[k] = gc.mem_alloc()
gc.enable()
c.finish(k * 4096)
print(json.dumps([marks[i + 1] - marks[i] for i in range(k)]))
""" % str(path))
    # Only the chunks a segment header or the image's tail falls in allocate (the walk records
    # the segment, the tail is copied out); every chunk inside a segment allocates nothing.
    marked = {0, 255}
    pos = 24
    for _ in range(img[1]):
        marked.add(pos // 4096)
        pos += 8 + struct.unpack_from("<I", img, pos + 4)[0]
    assert len(got) == 256 and len(marked) <= 5
    assert [i for i, x in enumerate(got) if x and i not in marked] == []
    assert sum(1 for x in got if x == 0) >= 251


def test_digest_off_skips_only_the_sha256_and_defer_waits_for_the_verdict(tmp_path):
    """ImageCheck(digest=False) (the updater's choice when a signature is required) passes an
    image whose appended SHA-256 alone is broken, and still refuses a broken checksum; with
    defer=True, finish() raises nothing and verdict() gives the same answer."""
    img = bytearray(build_image.build_image("1.1.0", size=40000, seed=1))
    bad_digest = bytes(img[:-1]) + bytes([img[-1] ^ 1])
    bad_sum = bytearray(img)
    bad_sum[20000] ^= 1
    paths = [_write(str(tmp_path), n, d) for n, d in
             (("digest.bin", bad_digest), ("sum.bin", bytes(bad_sum)))]
    assert [esptool_verdict(p) for p in paths] == [("valid", "invalid"), ("invalid", "invalid")]
    got = mpy_json(r"""
import json
from firmware.update.image_check import ImageCheck
from firmware.update.errors import UpdateError
out = []
for path in %r:
    data = open(path, "rb").read()
    for kw in ({}, {"digest": False}, {"digest": False, "defer": True}):
        c = ImageCheck(**kw)
        c.update(data)
        try:
            c.finish(len(data))
            if kw.get("defer"):
                c.verdict()
            out.append(None)
        except UpdateError as e:
            out.append(e.reason.split(" (")[0])
print(json.dumps(out))
""" % paths)
    assert got == ["image digest does not verify", None, None,
                   "image digest does not verify", "image checksum does not verify",
                   "image checksum does not verify"]
