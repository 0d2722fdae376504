"""Each stage of the update engine (firmware/update/) on its own, under the real micropython
binary: the HTTP and gzip sources, the checks, the flash writer, the commit, the resume record
and the pipeline that joins them. The whole engine and its fault matrix: test_updater.py.

Oracles: CPython's hashlib and gzip, esptool-checked images from tools/build_image.py, and the
simulated flash's erase/program counters."""
import gzip
import hashlib
import json
import os

import pytest

import build_image
from conftest import mpy_json
from image_server import ImageServer

PRELUDE = r"""
import json, hashlib, binascii, gc
from firmware.update.errors import UpdateError, Retry
def err(fn, *args):
    try:
        fn(*args)
    except UpdateError as e:
        return [e.code, e.reason]
    except Retry as e:
        return ["retry", e.reason]
    return None
def hexd(d):
    return binascii.hexlify(d.digest()).decode()
def read_all(src, n=4096):
    buf = bytearray(n)
    out = bytearray()
    while True:
        k = src.readinto(buf)
        if not k:
            return bytes(out)
        out.extend(buf[:k])
"""


def run(code, **kw):
    return mpy_json(PRELUDE + code, **kw)


@pytest.fixture
def server():
    s = ImageServer()
    yield s
    s.stop()


DATA = bytes(range(256)) * 300  # 76800 bytes: not a multiple of 4 KiB


# ---- HttpSource ------------------------------------------------------------------------------

def test_http_source_continues_with_range_and_taps_see_each_byte_once(server):
    server.files["/f.bin"] = DATA
    got = run(r"""
from firmware.update.http_source import HttpSource
from firmware.update.checks import Digest
tap = Digest("md5")
s = HttpSource(URL, len(DATA), taps=[tap])
first = s.open(0)
buf = bytearray(8192)
n = s.readinto(buf)      # part of the body, then the connection is dropped
s.close()
again = s.open(8192)     # Range: the rest
rest = read_all(s)
s.close()
print(json.dumps([first, n, again, len(rest), s.wire, s.length(), hexd(tap)]))
""".replace("URL", repr(server.url("/f.bin"))).replace("len(DATA)", str(len(DATA))))
    assert got == [0, 8192, 8192, len(DATA) - 8192, len(DATA), len(DATA),
                   hashlib.md5(DATA).hexdigest()]
    assert server.requests[1].headers["range"] == "bytes=8192-"


def test_http_source_says_when_the_server_ignored_range(server):
    server.files["/f.bin"] = DATA
    server.fault = {"ignore_range": True}
    got = run(r"""
from firmware.update.http_source import HttpSource
from firmware.update.checks import Digest
tap = Digest("md5")
s = HttpSource(URL, taps=[tap])
s.open(0)
buf = bytearray(10000)
s.readinto(buf)
s.close()
start = s.open(10000)    # the server sends the whole file again: the source says so
body = read_all(s)
s.close()
print(json.dumps([start, len(body), hexd(tap)]))
""".replace("URL", repr(server.url("/f.bin"))))
    assert got == [0, len(DATA), hashlib.md5(DATA).hexdigest()]  # taps not fed twice


def test_http_source_errors(server):
    server.files["/f.bin"] = DATA
    server.plan = [{"status": 404}, {"status": 503}, {}, {}]
    got = run(r"""
from firmware.update.http_source import HttpSource
out = []
s = HttpSource(URL)
out.append(err(s.open, 0))                      # 404: final
out.append(err(s.open, 0))                      # 503: worth another request
out.append(err(HttpSource(URL, 1000).open, 0))  # not the file the offer announced
s = HttpSource(URL, SIZE)
out.append([s.open(SIZE), read_all(s) == b""])  # 416 at the end: nothing was missing
print(json.dumps(out))
""".replace("URL", repr(server.url("/f.bin"))).replace("SIZE", str(len(DATA))))
    assert got[0] == [-1, "HTTP 404 Not Found"]
    assert got[1][0] == "retry" and "503" in got[1][1]
    assert got[2] == [-2, "server file is %d bytes, offer says 1000" % len(DATA)]
    assert got[3] == [len(DATA), True]


# ---- GzipSource ------------------------------------------------------------------------------

GZ_CODE = r"""
from firmware.update.http_source import HttpSource
from firmware.update.gzip_source import GzipSource
from firmware.update.checks import Digest
"""


def test_gzip_source_inflates_and_restarts_from_zero(server):
    gz = gzip.compress(DATA)
    server.files["/f.bin.gz"] = gz
    got = run(GZ_CODE + r"""
tap = Digest("md5")
s = GzipSource(HttpSource(URL, WIRE, taps=[tap]), 4096, True, WIRE, 1 << 20)
a = s.open(0)
buf = bytearray(4096)
s.readinto(buf)
s.close()
b = s.open(4096)           # cannot continue mid-stream: from byte 0 again
body = read_all(s)
s.finish()
print(json.dumps([a, b, s.resumable, hexd(hashlib.md5(body)), s.wire, s.wire_total, hexd(tap)]))
""".replace("URL", repr(server.url("/f.bin.gz"))).replace("WIRE", str(len(gz))))
    assert got == [0, 0, False, hashlib.md5(DATA).hexdigest(), len(gz), len(gz),
                   hashlib.md5(gz).hexdigest()]
    assert "range" not in server.requests[1].headers


def test_gzip_source_passes_plain_bodies_and_inflates_content_encoding(server):
    server.files["/p.bin"] = DATA
    server.files["/e.bin"] = gzip.compress(DATA)
    server.plan = [{}, {"headers": {"Content-Encoding": "gzip"}}]
    got = run(GZ_CODE + r"""
out = []
for url in (PLAIN_URL, ENC_URL):
    s = GzipSource(HttpSource(url), 4096)
    out.append([s.open(0), hexd(hashlib.md5(read_all(s))), s.active, s.length()])
    s.close()
print(json.dumps(out))
""".replace("PLAIN_URL", repr(server.url("/p.bin"))).replace("ENC_URL", repr(server.url("/e.bin"))))
    md5 = hashlib.md5(DATA).hexdigest()
    assert got == [[0, md5, False, len(DATA)], [0, md5, True, None]]


def test_gzip_source_refuses_corrupt_and_wrong_sized_files(server):
    gz = bytearray(gzip.compress(os.urandom(50000)))
    gz[len(gz) // 2] ^= 0xFF
    server.files["/bad.gz"] = bytes(gz)
    good = gzip.compress(DATA)
    server.files["/good.gz"] = good + b"trailing junk"
    got = run(GZ_CODE + r"""
s = GzipSource(HttpSource(BAD), 4096, True)
s.open(0)
a = err(read_all, s)
s = GzipSource(HttpSource(GOOD), 4096, True, WIRE, 1 << 20)
s.open(0)
read_all(s)
b = err(s.finish)          # the server's file is not the one the offer announced
print(json.dumps([a, b]))
""".replace("BAD", repr(server.url("/bad.gz"))).replace("GOOD", repr(server.url("/good.gz")))
        .replace("WIRE", str(len(good))))
    assert got[0] == [-2, "gzip data corrupt"]
    assert got[1] == [-2, "download is %d bytes, offer says %d" % (len(good) + 13, len(good))]


# ---- checks ------------------------------------------------------------------------------------

def test_header_check_and_its_version_rule(tmp_path):
    img = build_image.build_image("1.2.0", size=8192)
    c3 = build_image.build_image("1.2.0", size=8192, chip_id=5)
    (tmp_path / "a.bin").write_bytes(img)
    (tmp_path / "c3.bin").write_bytes(c3)
    got = run(r"""
from firmware.update.checks import HeaderCheck
img = open(%r, "rb").read(4096)
c3 = open(%r, "rb").read(4096)
def check(buf, *args):
    h = HeaderCheck(*args)
    h.update(buf)
    h.update(b"\x00" * 4096)   # later bytes are not headers
    return h.desc.version
out = [check(img, "1.2.0", "1.0.0"), check(img, "v1.2", "1.0.0"), check(img, None, "1.1.9"),
       check(img, None, "1.2.0", True)]
out.append(err(check, img, "1.3.0", "1.0.0"))
out.append(err(check, img, None, "1.2.0"))
out.append(err(check, c3, "1.2.0", "1.0.0"))
out.append(err(check, img[:100], None, "1.0.0"))
h = HeaderCheck(None, "1.0.0")
out.append(err(h.finish, 0))
print(json.dumps(out))
""" % (str(tmp_path / "a.bin"), str(tmp_path / "c3.bin")))
    assert got[:4] == ["1.2.0"] * 4
    assert got[4] == [-4, "image is version 1.2.0, offer says 1.3.0"]
    assert got[5] == [-4, "version 1.2.0 is not newer than running 1.2.0"]
    assert got[6] == [-2, "bad image: chip id 5 is not ESP32-S3 (9)"]
    assert got[7][0] == -2 and "header too short" in got[7][1]
    assert got[8] == [-2, "empty or too short download"]


def test_digest_checks_agree_with_cpython_hashlib():
    data = os.urandom(10000)
    md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    got = run(r"""
from firmware.update.checks import Digest
data = binascii.unhexlify(%r)
out = []
for name, want in (("md5", %r), ("sha256", %r), ("md5", "0" * 32), ("sha256", None)):
    d = Digest(name, want)
    d.update(data[:3000])
    d.update(memoryview(data)[3000:])
    out.append([hexd(d), err(d.finish, len(data))])
print(json.dumps(out))
""" % (data.hex(), md5, sha))
    assert got == [[md5, None], [sha, None], [md5, [-2, "md5 mismatch"]], [sha, None]]


# ---- FlashWriter -------------------------------------------------------------------------------

WRITER = r"""
from firmware.board import sim
from firmware.update.flash_writer import FlashWriter
b = sim.Board({})
P = b.Partition
part = P(P.RUNNING).get_next_update()
f = b.flash
def write_all(w, data, chunk, start=0):
    mv = memoryview(data)
    for off in range(start, len(data), chunk):
        w.write(off, mv[off:off + chunk])
"""


@pytest.mark.parametrize("chunk,stage,expect", [(4096, False, (0, 49)), (65536, False, (3, 1)),
                                               (4096, True, (3, 1)), (16384, True, (3, 1))])
def test_flash_writer_erase_unit_follows_chunk_and_stage(sim_root, chunk, stage, expect):
    data = os.urandom(200000)
    got = run(WRITER + r"""
data = open(%r, "rb").read()
f.reset_counters()
w = FlashWriter(part, bytearray(65536) if %s else None)
write_all(w, data, %d)
w.flush()
w.verify(len(data), bytearray(%d), hashlib.md5(data).digest())
back = bytearray(len(data))
part.readblocks(0, back)
print(json.dumps([f.erase_64k, f.erase_4k, f.programmed_bytes, back == data]))
""" % (_tmp(sim_root, "d.bin", data), stage, chunk, chunk), cwd=sim_root)
    # each region erased once with the erase the esp32 port performs for that chunk size
    assert got == [expect[0], expect[1], len(data), True]


def test_flash_writer_resumes_skips_what_is_on_flash_and_reerases_beyond(sim_root):
    data = os.urandom(3 * 65536)
    got = run(WRITER + r"""
data = open(%r, "rb").read()
w = FlashWriter(part)
write_all(w, data[:70000], 4096)          # 69632 on flash, a torn chunk after it
f.reset_counters()
w = FlashWriter(part)
w.resume(65536)                           # the record says 64 KiB
write_all(w, data, 4096)                  # the whole stream again (a gzip restart)
back = bytearray(len(data))
part.readblocks(0, back)
print(json.dumps([f.programmed_bytes, f.erase_4k, back == data]))
""" % _tmp(sim_root, "d.bin", data), cwd=sim_root)
    assert got == [len(data) - 65536, (len(data) - 65536) // 4096, True]


# A Partition that behaves as ports/esp32/esp32_partition.c does for a block size other than
# 4096 (e.g. Partition(label, 65536), whose uint16_t block_size is 0): esp32_partition_ioctl's
# MP_BLOCKDEV_IOCTL_BLOCK_ERASE returns -MP_EINVAL without erasing. Everything else is the sim.
BAD_BLOCK_SIZE = r"""
class OddBlockSize:
    def __init__(self, part):
        self.p = part
    def ioctl(self, op, arg):
        if op == 6:
            return -22
        return self.p.ioctl(op, arg)
    def writeblocks(self, *a):
        self.p.writeblocks(*a)
    def readblocks(self, *a):
        self.p.readblocks(*a)
"""


def test_flash_writer_checks_every_erase_return_and_the_read_back(sim_root):
    data = os.urandom(20000)
    got = run(WRITER + BAD_BLOCK_SIZE + r"""
data = open(%r, "rb").read()
f.reset_counters()
w = FlashWriter(OddBlockSize(part))
a = err(w.write, 0, data[:4096])
n = f.programmed_bytes
w = FlashWriter(part)
write_all(w, data, 4096)
b = err(w.verify, len(data), bytearray(4096), hashlib.md5(data + b"x").digest())
w.scrub()
first = bytearray(4096)
part.readblocks(0, first)
print(json.dumps([a, n, b, first == b"\xff" * 4096]))
""" % _tmp(sim_root, "d.bin", data), cwd=sim_root)
    assert got[0] == [-3, "flash erase failed at 0x0: ioctl returned -22"]
    assert got[1] == 0                               # nothing written over unerased flash
    assert got[2] == [-3, "flash read-back does not match the download"]
    assert got[3] is True                            # scrubbed: never bootable


# ---- commit ------------------------------------------------------------------------------------

def test_commit_switches_boot_only_for_a_whole_verifying_image(sim_root):
    img = build_image.build_image("1.1.0", size=100000)
    bad = bytearray(img)
    bad[50000] ^= 1                                  # the appended SHA-256 no longer matches
    got = run(WRITER + r"""
from firmware.update.commit import commit
def put(data):
    w = FlashWriter(part)
    write_all(w, data, 4096)
img = open(%r, "rb").read()
bad = open(%r, "rb").read()
out = []
put(bad)
out.append(err(commit, part, len(bad)))
put(img)
out.append(err(commit, part, len(img) - 16))     # the stream was shorter than the image
orig = P.set_boot
def refuse(self):
    raise OSError(-1)
P.set_boot = refuse
out.append(err(commit, part, len(img)))           # a good image, but the switch fails
P.set_boot = orig
out.append(err(commit, part, len(img) + 4096))    # a longer stream (signature sector) is fine
out.append(P(P.BOOT).info()[4])
print(json.dumps(out))
""" % (str(_tmp(sim_root, "img.bin", img)), str(_tmp(sim_root, "bad.bin", bytes(bad)))),
        cwd=sim_root)
    assert got[0] == [-2, "image digest does not verify"]
    assert got[1] == [-2, "image needs 100000 bytes, got 99984"]
    assert got[2][0] == -3 and got[2][1].startswith("boot switch failed")
    assert got[3] is None and got[4] == "ota_1"


def _tmp(root, name, data):
    path = os.path.join(root, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---- resume record -----------------------------------------------------------------------------

def test_resume_record_matches_only_the_same_offer(sim_root):
    got = run(r"""
import time
from firmware.board import sim
from firmware.update.resume import Resume, KEY
b = sim.Board({})
s = b.settings
def store(url="http://x/a?sig=1", md5="ab" * 16, version="1.1.0", size=200000):
    return Resume(s, url, version, md5, size, "ota_1", 0x300000, 0)
r = store()
out = [r.load(4096), r.due(65536), r.due(65536 + 4096)]
r.save(139264 + 100)
out.append(s.get(KEY)["written"])
out.append(store(url="http://x/a?sig=2").load(4096))     # a new pre-signed URL, same md5
out.append(store().load(65536 * 4))                       # not a multiple of this chunk size
out.append(s.get(KEY))                                    # ... so it was dropped
r.save(65536)
out.append(store(md5=None, url="http://x/b").load(4096))  # no md5: the URL must match
r = store()
r.save(65536)
r.forget()
out.append(s.get(KEY))
slow = Resume(s, "u", "v", None, 1, "ota_1", 0x300000, 60000)
out.append(slow.due(65536))                               # at most once a minute here
print(json.dumps(out))
""", cwd=sim_root)
    assert got == [0, True, False, 139264, 139264, 0, None, 0, None, False]


# ---- the pipeline ------------------------------------------------------------------------------

PIPE = WRITER + r"""
import io
from firmware.update.pipeline import Pipeline
from firmware.update.checks import Digest, HeaderCheck
from firmware.update.errors import Retry

class MemSource:
    # A stream from memory that drops after `drops` bytes (each once) and restarts from 0
    # when `resumable` is False -- the faces of a gzip or delta source.
    def __init__(self, data, drops=(), resumable=True):
        self.data = data
        self.drops = list(drops)
        self.resumable = resumable
        self.wire_total = None
        self.opens = []
    def length(self):
        return len(self.data)
    def open(self, pos):
        start = pos if self.resumable else 0
        self.opens.append(start)
        self.io = io.BytesIO(self.data)
        self.io.seek(start)
        self.stop = self.drops.pop(0) if self.drops else None
        return start
    def readinto(self, buf):
        if self.stop is not None and self.io.tell() >= self.stop:
            raise Retry("dropped")
        return self.io.readinto(buf)
    def finish(self):
        pass
    def close(self):
        pass

def pipeline(src, chunk=4096, probe=None):
    md5 = Digest("md5")
    sha = Digest("sha256")
    p = Pipeline(src, HeaderCheck(None, "1.0.0"), [md5, sha], FlashWriter(part),
                 bytearray(chunk), ("ota_1", part.info()[3]), md5, probe=probe)
    return p, md5, sha
"""


@pytest.mark.parametrize("resumable", [True, False])
def test_pipeline_feeds_every_check_each_byte_once_across_drops(sim_root, resumable):
    img = build_image.build_image("1.1.0", size=150000)
    path = _tmp(sim_root, "img.bin", img)
    got = run(PIPE + r"""
img = open(%r, "rb").read()
f.reset_counters()
src = MemSource(img, drops=[40960, 90112], resumable=%s)
p, md5, sha = pipeline(src)
end = p.run(3, 1, 1)
print(json.dumps([end, src.opens, hexd(md5), hexd(sha), f.programmed_bytes]))
""" % (path, resumable), cwd=sim_root)
    opens = [0, 40960, 90112] if resumable else [0, 0, 0]
    assert got == [len(img), opens, hashlib.md5(img).hexdigest(),
                   hashlib.sha256(img).hexdigest(), len(img)]


def test_pipeline_steady_state_allocates_nothing(sim_root):
    img = build_image.build_image("1.1.0", size=1024 * 1024)
    path = _tmp(sim_root, "img.bin", img)
    got = run(PIPE + r"""
import array
img = open(%r, "rb").read()
marks = array.array("q", [0] * 129)
i = [0]
def probe(off):
    k = i[0]
    i[0] = k + 1
    if k == 16:
        gc.collect()
        gc.disable()
    if 16 <= k <= 144:
        marks[k - 16] = gc.mem_alloc()
    if k == 144:
        gc.enable()
p, md5, sha = pipeline(MemSource(img), probe=probe)
p.run(0, 1, 1)
print(json.dumps([marks[j + 1] - marks[j] for j in range(128)]))
""" % path, cwd=sim_root)
    assert got == [0] * 128


def test_pipeline_refuses_a_stream_longer_than_announced(sim_root):
    img = build_image.build_image("1.1.0", size=20000)
    path = _tmp(sim_root, "img.bin", img)
    got = run(PIPE + r"""
img = open(%r, "rb").read()
class Short(MemSource):
    def length(self):
        return 12000
p, md5, sha = pipeline(Short(img))
out = [err(p.run, 0, 1, 1)]
class Long(MemSource):
    def length(self):
        return 30000
p, md5, sha = pipeline(Long(img))
out.append(err(p.run, 0, 1, 1))
print(json.dumps(out))
""" % path, cwd=sim_root)
    assert got == [[-2, "body longer than the 12000 bytes announced"],
                   [-2, "truncated: got 20000 of 30000 bytes"]]
