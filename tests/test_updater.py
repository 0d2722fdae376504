"""The update engine (firmware/updater.py) on the unix port against a local fault-injecting server.

Every failure case ends by booting the simulated board again and checking that the old image
(1.0.0 in ota_0) still runs, and that a reason and an iThings-style code were reported.
Power loss is a SIGKILL of the micropython process in the middle of a flash operation (the
flash file keeps whatever was written, exactly like the chip).
"""
import gzip
import hashlib
import json
import os
import subprocess
import time

import pytest

import build_image
import mkflash
from conftest import MICROPYTHON, mpy_env, mpy_json
from image_server import ImageServer

SIZE = 200000            # 3 x 64 KiB blocks + 1 sector of tail
OTA1 = 0x310000          # ota_1 in the ESP-BOX-3 table
NEW = "1.1.0"

DRIVER = r"""
import json, os, sys, time
from firmware.board import sim
from firmware import updater
a = json.loads(os.getenv('UPD_ARGS'))
updater.BACKOFF_MS = 20
updater.PERSIST_MS = a.get('persist_ms', 0)
b = sim.Board({})
b.flash.reset_counters()
cut = a.get('cut')
if cut:
    kind, nth = cut
    count = [0]
    def halt(msg):
        print('POWERCUT ' + msg)
        while True:               # wait here for SIGKILL: the "power" goes away mid-operation
            time.sleep(1)
    if kind in ('erase', 'program', 'otadata'):
        orig_erase, orig_program = b.flash.erase, b.flash.program
        def erase(addr, size):
            if kind == 'otadata' and 0xD000 <= addr < 0xF000:
                orig_erase(addr, size)          # the entry is blank, the new one never lands
                halt('otadata')
            if kind == 'erase':
                count[0] += 1
                if count[0] == nth:
                    orig_erase(addr, 4096)      # the block erase stopped after one sector
                    halt('erase %d at 0x%x' % (nth, addr))
            orig_erase(addr, size)
        def program(addr, data):
            if kind == 'program':
                count[0] += 1
                if count[0] == nth:
                    orig_program(addr, bytes(data[:len(data) // 2]))   # a torn page write
                    halt('program %d at 0x%x' % (nth, addr))
            orig_program(addr, data)
        b.flash.erase = erase
        b.flash.program = program
    elif kind == 'stuck_bit':                  # a cell (ota_1 offset nth) that stays 0
        orig_program = b.flash.program
        cell = b.Partition('ota_1').info()[2] + nth
        def program(addr, data):
            if addr <= cell < addr + len(data):
                data = bytearray(data)
                data[cell - addr] &= 0xFE
            orig_program(addr, data)
        b.flash.program = program
    elif kind == 'set_boot':
        b.Partition.set_boot = lambda self: halt('before set_boot')
progress = []
def on_progress(done, total, rate):
    progress.append([done, total, rate, time.ticks_ms()])
try:
    label = updater.install(b, updater.Offer(**a['offer']), a.get('running', '1.0.0'),
                            progress=on_progress, timeout_ms=a.get('timeout_ms', 5000),
                            retries=a.get('retries', 5), chunk=a.get('chunk', 4096),
                            stage=a.get('stage'), config=a.get('config'),
                            min_rate=a['min_rate'] if 'min_rate' in a else updater.DEFAULT_RATE)
    out = {'ok': True, 'label': label}
except updater.UpdateError as e:
    out = {'ok': False, 'code': e.code, 'reason': e.reason}
out['counters'] = b.flash.counters()
out['progress'] = progress
out['resume'] = b.settings.get('ota_resume')
out['settings_writes'] = b.settings.writes
print(json.dumps(out))
"""

BOOT = """
import json
from firmware.board import sim
b = sim.Board({})
print(json.dumps([b.Partition(b.Partition.RUNNING).info()[4], b.app_desc().version, b.ota_state()]))
"""


@pytest.fixture
def server():
    s = ImageServer()
    yield s
    s.stop()


@pytest.fixture
def root(tmp_path):
    mkflash.make_device_root(str(tmp_path), version="1.0.0")
    return str(tmp_path)


def image(version=NEW, size=SIZE, **kw):
    return build_image.build_image(version, size=size, seed=1, **kw)


def offer_for(server, data, path="/fw.bin", md5=True, size=True, version=NEW, **kw):
    server.files[path] = data
    o = {"url": server.url(path), "version": version}
    if md5:
        o["md5"] = hashlib.md5(data).hexdigest()
    if size:
        o["size"] = len(data)
    o.update(kw)
    return o


def install(root, offer, **args):
    args["offer"] = offer
    return mpy_json(DRIVER, cwd=root, env={"UPD_ARGS": json.dumps(args)})


def install_until_cut(root, offer, cut, **args):
    """Run an install that halts inside a flash operation, then SIGKILL it (power loss)."""
    args.update(offer=offer, cut=cut)
    proc = subprocess.Popen([MICROPYTHON, "-c", DRIVER], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=mpy_env({"UPD_ARGS": json.dumps(args)}))
    lines = []
    deadline = time.time() + 30
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("POWERCUT") or time.time() > deadline:
                break
    finally:
        proc.kill()  # our own child, by its pid
        proc.wait()
    assert lines and lines[-1].startswith("POWERCUT"), "".join(lines) + proc.stderr.read()
    return lines[-1].strip()


def boot(root):
    return mpy_json(BOOT, cwd=root)


def assert_old_boots(root):
    # "valid": the first boot wrote otadata[0] = {seq 1, VALID} for ota_0, as the bootloader does
    assert boot(root) == ["ota_0", "1.0.0", "valid"]


def flash_at(root, addr, n):
    with open(os.path.join(root, "flash.bin"), "rb") as f:
        f.seek(addr)
        return f.read(n)


def minimal_erases(size):
    blocks = size // 65536
    return blocks, -(-(size - blocks * 65536) // 4096)


# ---- success paths -------------------------------------------------------------------------

def test_update_then_reboot_runs_new_image_pending_verify(root, server):
    data = image()
    r = install(root, offer_for(server, data))
    assert r["ok"] and r["label"] == "ota_1", r
    blocks, sectors = minimal_erases(SIZE)
    c = r["counters"]
    # each region erased once with the biggest erase that fits; each byte programmed once
    # (+1 sector erase and 32 bytes for the otadata entry that set_boot writes)
    assert (c["erase_64k"], c["erase_4k"]) == (blocks, sectors + 1)
    assert c["programmed_bytes"] == SIZE + 32
    assert flash_at(root, OTA1, SIZE) == data
    assert r["progress"][-1][:2] == [SIZE, SIZE] and r["resume"] is None
    assert boot(root) == ["ota_1", NEW, "pending-verify"]
    assert boot(root) == ["ota_0", "1.0.0", "valid"]  # never confirmed -> rolled back to ota_0's entry


def test_second_and_third_update_into_slots_holding_old_images(root, server):
    """Every update after the first goes into a slot that holds an older image. The port's
    Partition(label, 65536) has block size 0 (uint16) and its ioctl(6) erases nothing, so an
    engine that relied on it would program over old data and fail its read-back on a board."""
    confirm = BOOT.replace("print(", "b.Partition.mark_app_valid_cancel_rollback()\nprint(")
    running = "1.0.0"
    erases = []
    for version, size, slot in (("1.1.0", SIZE, "ota_1"), ("1.2.0", SIZE + 70000, "ota_0"),
                                ("1.3.0", SIZE - 5000, "ota_1")):
        data = image(version, size=size)
        r = install(root, offer_for(server, data, path="/%s.bin" % version, version=version),
                    running=running)
        assert r["ok"] and r["label"] == slot, (version, r)
        assert r["counters"]["conflicts"] == 0, r      # nothing programmed over unerased data
        assert mpy_json(confirm, cwd=root) == [slot, version, "valid"]
        erases.append([r["counters"]["erase_64k"], r["counters"]["erase_4k"] - 1])  # - otadata
        running = version
    assert erases == [list(minimal_erases(n)) for n in (SIZE, SIZE + 70000, SIZE - 5000)]


def test_resume_after_drop_uses_range_and_does_not_refetch(root, server):
    data = image()
    o = offer_for(server, data)
    server.plan = [{"close_at": SIZE // 2 + 1000}]
    r = install(root, o)
    assert r["ok"], r
    assert len(server.requests) == 2 and "range" not in server.requests[0].headers
    resumed_at = int(server.requests[1].headers["range"].split("=")[1].rstrip("-"))
    assert resumed_at == (SIZE // 2 + 1000) // 4096 * 4096
    assert r["counters"]["programmed_bytes"] == SIZE + 32
    assert r["counters"]["erase_64k"] == 3
    assert boot(root)[:2] == ["ota_1", NEW]


def test_server_ignoring_range_still_succeeds(root, server):
    data = image()
    o = offer_for(server, data)
    server.plan = [{"close_at": 150000}]
    server.fault = {"ignore_range": True}
    r = install(root, o)
    assert r["ok"], r
    assert server.requests[1].headers["range"] == "bytes=147456-"   # asked, got 200
    assert r["counters"]["programmed_bytes"] == SIZE + 32          # skipped, not rewritten
    assert boot(root)[:2] == ["ota_1", NEW]


@pytest.mark.parametrize("pct", [0, 10, 50, 99])
def test_single_connection_reset_is_survived(root, server, pct):
    data = image()
    server.plan = [{"close_at": SIZE * pct // 100}]
    r = install(root, offer_for(server, data))
    assert r["ok"], r
    assert boot(root)[:2] == ["ota_1", NEW]


def test_drop_after_the_last_byte_of_a_chunked_body(root, server):
    data = image(size=3 * 65536)
    head = len("%x\r\n" % len(data))
    server.fault = {"mode": "chunked", "close_at": head + len(data)}  # no final 0-chunk
    r = install(root, offer_for(server, data))
    assert r["ok"], r
    assert [q.headers.get("range") for q in server.requests] == [None, "bytes=196608-"]  # 416
    assert r["counters"]["programmed_bytes"] == len(data) + 32
    assert boot(root)[:2] == ["ota_1", NEW]


def test_chunked_download_without_size_or_md5(root, server):
    # the xiaozhi check offers only a URL and a version; the image's own digest is the check
    data = image()
    server.fault = {"mode": "chunked"}
    r = install(root, offer_for(server, data, md5=False, size=False))
    assert r["ok"], r
    assert boot(root)[:2] == ["ota_1", NEW]


def test_version_from_header_when_offer_names_none(root, server):
    r = install(root, offer_for(server, image("1.0.0"), version=None))
    assert not r["ok"] and r["code"] == -4 and "not newer" in r["reason"]
    assert r["counters"]["erase_64k"] == r["counters"]["erase_4k"] == 0
    assert_old_boots(root)


def test_force_allows_reinstall_of_same_version(root, server):
    r = install(root, offer_for(server, image("1.0.0"), version="1.0.0", force=True))
    assert r["ok"], r
    assert boot(root) == ["ota_1", "1.0.0", "pending-verify"]


@pytest.mark.parametrize("offered,reason", [("1.0.0", "not newer"), ("0.9", "not newer"),
                                            ("1.0", "not newer"), ("banana", "cannot compare")])
def test_refused_before_download_when_not_newer(root, server, offered, reason):
    r = install(root, offer_for(server, image(offered if offered != "banana" else NEW), version=offered))
    assert not r["ok"] and r["code"] == -4 and reason in r["reason"], r
    assert server.requests == []
    assert_old_boots(root)


def test_gzip_file_md5_is_of_the_compressed_file(root, server):
    data = image()
    gz = gzip.compress(data)
    r = install(root, offer_for(server, gz, path="/fw.bin.gz"))
    assert r["ok"], r
    assert flash_at(root, OTA1, SIZE) == data
    assert boot(root)[:2] == ["ota_1", NEW]


def test_gzip_with_64k_chunks_block_erases(root, server):
    data = image()
    r = install(root, offer_for(server, gzip.compress(data), path="/fw.bin.gz"), chunk=65536)
    assert r["ok"], r
    blocks, sectors = minimal_erases(SIZE)
    assert (r["counters"]["erase_64k"], r["counters"]["erase_4k"]) == (blocks, sectors + 1)
    assert flash_at(root, OTA1, SIZE) == data


def test_gzip_file_with_image_md5_is_rejected(root, server):
    data = image()
    o = offer_for(server, gzip.compress(data), path="/fw.bin.gz")
    o["md5"] = hashlib.md5(data).hexdigest()   # signs the image, not the file served: refused
    r = install(root, o)
    assert not r["ok"] and r["code"] == -2 and r["reason"] == "md5 mismatch"
    assert_old_boots(root)


def test_content_encoding_gzip_md5_is_of_the_image(root, server):
    data = image()
    o = offer_for(server, data)
    server.files["/fw.bin"] = gzip.compress(data)   # compressed on the fly by the server
    server.fault = {"headers": {"Content-Encoding": "gzip"}}
    o["size"] = len(data)
    r = install(root, o)
    assert r["ok"], r
    assert boot(root)[:2] == ["ota_1", NEW]


def test_gzip_drop_restarts_stream_without_rewriting_flash(root, server):
    data = image()
    gz = gzip.compress(data)
    server.plan = [{"close_at": len(gz) * 2 // 3}]
    r = install(root, offer_for(server, gz, path="/fw.bin.gz"))
    assert r["ok"], r
    assert "range" not in server.requests[1].headers           # inflater state cannot resume
    assert r["counters"]["programmed_bytes"] == SIZE + 32
    assert boot(root)[:2] == ["ota_1", NEW]


def test_corrupt_gzip_is_an_integrity_failure(root, server):
    gz = bytearray(gzip.compress(image()))
    gz[len(gz) // 2] ^= 0xFF
    r = install(root, offer_for(server, bytes(gz), path="/fw.bin.gz"))
    assert not r["ok"] and r["code"] == -2 and "gzip" in r["reason"], r
    assert_old_boots(root)


def test_progress_is_rate_limited(root, server):
    data = image(size=256 * 1024)
    server.fault = {"pace": (16384, 0.06)}                      # about 1 s for 64 chunks
    r = install(root, offer_for(server, data))
    assert r["ok"], r
    p = r["progress"]
    assert p[-1][:2] == [len(data), len(data)]                  # the last call says 100 %
    assert 2 <= len(p) <= 8, p                                  # not one per chunk (64)
    gaps = [b[3] - a[3] for a, b in zip(p, p[1:-1])]
    assert all(g >= 250 for g in gaps), gaps                    # at most 4 a second
    assert all(0 < x[0] <= len(data) and x[1] == len(data) and x[2] > 0 for x in p)
    assert [x[0] for x in p] == sorted(x[0] for x in p)


# ---- the fault matrix: each ends with the old image booting --------------------------------

def _failed(r, code, text):
    assert not r["ok"], r
    assert r["code"] == code and text in r["reason"], r
    assert "s3cr3t" not in r["reason"] and "?" not in r["reason"]
    assert r["resume"] is None


@pytest.mark.parametrize("pct", [0, 10, 50, 99])
def test_connection_reset_every_time(root, server, pct):
    data = image()
    server.fault = {"close_at": SIZE * pct // 100}
    r = install(root, offer_for(server, data), retries=2)
    _failed(r, -1, "download failed")
    assert 3 <= len(server.requests) <= 12
    if pct:
        assert flash_at(root, OTA1, 4096) == b"\xff" * 4096   # scrubbed: never bootable
    assert_old_boots(root)


def test_truncated_body_announced_by_the_server(root, server):
    data = image()
    o = offer_for(server, data)
    server.files["/fw.bin"] = data[:150000]
    _failed(install(root, o), -2, "offer says")
    assert_old_boots(root)


def test_truncated_chunked_body(root, server):
    data = image()
    o = offer_for(server, data)
    server.files["/fw.bin"] = data[:150000]
    server.fault = {"mode": "chunked"}
    _failed(install(root, o), -2, "truncated")
    assert flash_at(root, OTA1, 4096) == b"\xff" * 4096
    assert_old_boots(root)


def test_body_longer_than_announced(root, server):
    data = image()
    o = offer_for(server, data)
    server.files["/fw.bin"] = data + b"\0" * 8192
    server.fault = {"mode": "chunked"}
    _failed(install(root, o), -2, "longer than")
    assert_old_boots(root)


def test_content_length_longer_than_offer(root, server):
    data = image()
    o = offer_for(server, data)
    server.files["/fw.bin"] = data + b"\0" * 16
    _failed(install(root, o), -2, "offer says")
    assert_old_boots(root)


def test_md5_mismatch(root, server):
    o = offer_for(server, image())
    o["md5"] = "0" * 32
    r = install(root, o)
    _failed(r, -2, "md5 mismatch")
    assert flash_at(root, OTA1, 4096) == b"\xff" * 4096   # a complete, valid image: scrubbed
    assert_old_boots(root)


def test_sha256_mismatch(root, server):
    data = image()
    o = offer_for(server, data, sha256="ab" * 32)
    _failed(install(root, o), -2, "sha256 mismatch")
    assert_old_boots(root)


def test_sha256_match(root, server):
    data = image()
    r = install(root, offer_for(server, data, sha256=hashlib.sha256(data).hexdigest()))
    assert r["ok"], r


def test_flash_read_back_mismatch(root, server):
    data = image()
    data = data[:4096 * 7 + 100] + bytes([data[4096 * 7 + 100] | 1]) + data[4096 * 7 + 101:]
    r = install(root, offer_for(server, data), cut=["stuck_bit", 4096 * 7 + 100])
    _failed(r, -3, "read-back")
    assert_old_boots(root)


def test_wrong_magic(root, server):
    data = bytearray(image())
    data[0] = 0xE8
    r = install(root, offer_for(server, bytes(data)))
    _failed(r, -2, "bad magic")
    assert r["counters"]["erase_64k"] == r["counters"]["erase_4k"] == 0   # nothing touched
    assert_old_boots(root)


def test_wrong_chip_id(root, server):
    r = install(root, offer_for(server, image(chip_id=5)))   # an ESP32-C3 build
    _failed(r, -2, "chip id 5")
    assert r["counters"]["erase_64k"] == 0
    assert_old_boots(root)


def test_image_version_differs_from_offer(root, server):
    r = install(root, offer_for(server, image("1.2.0")))
    _failed(r, -4, "image is version 1.2.0")
    assert_old_boots(root)


def test_offer_version_spelt_differently_still_matches_the_image(root, server):
    r = install(root, offer_for(server, image(NEW), version="v1.1"))   # "v1.1" is 1.1.0
    assert r["ok"] and r["label"] == "ota_1", r


def test_image_larger_than_partition_refused_before_download(root, server):
    o = {"url": server.url("/big.bin"), "size": 0x300000 + 16, "md5": "0" * 32, "version": NEW}
    _failed(install(root, o), -2, "larger than partition")
    assert server.requests == []
    assert_old_boots(root)


def test_image_larger_than_partition_without_size(root, server):
    data = image(size=0x300000 + 4096)
    server.fault = {"mode": "chunked"}
    _failed(install(root, offer_for(server, data, md5=False, size=False)), -2, "larger than partition")
    assert flash_at(root, OTA1, 4096) == b"\xff" * 4096
    assert_old_boots(root)


@pytest.mark.parametrize("status,retried", [(404, False), (500, True)])
def test_server_error_on_the_resume_request(root, server, status, retried):
    data = image()
    server.plan = [{"close_at": SIZE // 2}]
    server.fault = {"status": status}
    r = install(root, offer_for(server, data), retries=2)
    _failed(r, -1, "HTTP %d" % status)
    assert len(server.requests) == (4 if retried else 2)
    assert server.requests[1].headers.get("range")
    assert_old_boots(root)


def test_stalled_server_times_out(root, server):
    data = image()
    server.fault = {"stall_at": SIZE // 2}
    t = time.time()
    r = install(root, offer_for(server, data), timeout_ms=300, retries=1)
    _failed(r, -1, "timed out")
    assert time.time() - t < 10
    assert_old_boots(root)


def test_unreachable_server(root):
    o = {"url": "http://127.0.0.1:1/fw.bin", "size": SIZE, "version": NEW}
    _failed(install(root, o, retries=1), -1, "download failed")
    assert_old_boots(root)


# ---- power loss ----------------------------------------------------------------------------

def test_power_loss_during_erase(root, server):
    data = image()
    o = offer_for(server, data)
    assert install_until_cut(root, o, ["erase", 2]).startswith("POWERCUT erase 2")
    assert_old_boots(root)


def test_power_loss_mid_write_then_resume_after_reboot(root, server):
    data = image()
    o = offer_for(server, data)
    install_until_cut(root, o, ["program", 3])     # the 3rd 64 KiB block torn, 128 KiB persisted
    assert_old_boots(root)
    with open(os.path.join(root, "settings.json")) as f:
        assert json.load(f)["ota_resume"]["written"] == 131072
    n = len(server.requests)
    r = install(root, o)
    assert r["ok"], r
    assert server.requests[n].headers["range"] == "bytes=131072-"
    assert r["counters"]["programmed_bytes"] == SIZE - 131072 + 32
    assert r["resume"] is None
    assert boot(root)[:2] == ["ota_1", NEW]


def test_without_a_stage_sectors_are_erased_one_by_one_and_resume_works(root, server):
    """A small heap (no room for the 64 KiB stage): every sector erased once with ioctl(6),
    each 4 KiB chunk programmed as it arrives, and a reset still resumes at 128 KiB."""
    data = image()
    o = offer_for(server, data)
    install_until_cut(root, o, ["program", 40], stage=False)   # 160 KiB in, 128 KiB persisted
    assert_old_boots(root)
    n = len(server.requests)
    r = install(root, o, stage=False)
    assert r["ok"], r
    assert server.requests[n].headers["range"] == "bytes=131072-"
    c = r["counters"]
    assert (c["erase_64k"], c["erase_4k"]) == (0, -(-(SIZE - 131072) // 4096) + 1)
    assert c["programmed_bytes"] == SIZE - 131072 + 32
    assert flash_at(root, OTA1, SIZE) == data
    assert boot(root)[:2] == ["ota_1", NEW]


@pytest.mark.parametrize("heapsize,block_erases", [(None, True), ("320k", False)])
def test_chunk_size_left_to_install_follows_the_heap(root, server, heapsize, block_erases):
    """install(chunk=None), as the app calls it: with room in the heap (a PSRAM board) it reads
    64 KiB chunks and block-erases; in a 320 KiB heap (under BIG_HEAP free once the modules are
    loaded) it falls back to 4 KiB chunks and sectors. A refused stage means 4 KiB chunks."""
    picked = mpy_json("import json\nfrom firmware import updater\n"
                      "print(json.dumps([updater._chunk(None), updater._chunk(False)]))",
                      cwd=root, heapsize=heapsize)
    assert picked == [65536 if block_erases else 4096, 4096]
    data = image()
    args = {"offer": offer_for(server, data), "chunk": None}
    r = mpy_json(DRIVER, cwd=root, env={"UPD_ARGS": json.dumps(args)}, heapsize=heapsize)
    assert r["ok"], r
    blocks, sectors = minimal_erases(SIZE)
    c = r["counters"]
    if block_erases:
        assert (c["erase_64k"], c["erase_4k"]) == (blocks, sectors + 1)
    else:
        assert (c["erase_64k"], c["erase_4k"]) == (0, -(-SIZE // 4096) + 1)
    assert flash_at(root, OTA1, SIZE) == data
    assert boot(root)[:2] == ["ota_1", NEW]


def test_resume_after_reboot_rehashes_flash_instead_of_trusting_it(root, server):
    data = image()
    o = offer_for(server, data)
    install_until_cut(root, o, ["program", 3])
    with open(os.path.join(root, "flash.bin"), "r+b") as f:   # a bit flipped while off
        f.seek(OTA1 + 70000)
        f.write(bytes([data[70000] ^ 1]))
    n = len(server.requests)
    r = install(root, o)
    assert r["ok"], r                                            # md5 caught it: redone from 0
    assert [q.headers.get("range") for q in server.requests[n:]] == ["bytes=131072-", None]
    assert flash_at(root, OTA1, SIZE) == data
    assert boot(root)[:2] == ["ota_1", NEW]


def test_resumed_image_that_fails_then_cannot_download_is_scrubbed(root, server):
    data = image()
    o = offer_for(server, data)
    install_until_cut(root, o, ["program", 3])
    with open(os.path.join(root, "flash.bin"), "r+b") as f:   # a bit flipped while off
        f.seek(OTA1 + 70000)
        f.write(bytes([data[70000] ^ 1]))
    n = len(server.requests)
    server.plan = [{}] * n + [{}, {"status": 404}]             # the fresh start finds nothing
    r = install(root, o)
    _failed(r, -1, "HTTP 404")
    assert flash_at(root, OTA1, 4096) == b"\xff" * 4096       # nothing bootable left behind
    assert_old_boots(root)


def test_progress_persistence_is_rate_limited(root, server):
    data = image()
    # every 64 KiB (3 records) and the clean-up when the persist interval allows it ...
    assert install(root, offer_for(server, data), persist_ms=0)["settings_writes"] == 4
    # ... none at all when the whole download takes less than the interval (flash wear)
    mkflash.make_device_root(root, version="1.0.0")
    r = install(root, offer_for(server, data), persist_ms=60000)
    assert r["ok"] and r["settings_writes"] == 0, r


def test_gzip_resume_after_reboot(root, server):
    data = image()
    o = offer_for(server, gzip.compress(data), path="/fw.bin.gz")
    install_until_cut(root, o, ["program", 2])
    r = install(root, o)
    assert r["ok"], r
    assert r["counters"]["programmed_bytes"] == SIZE - 65536 + 32
    assert boot(root)[:2] == ["ota_1", NEW]


def test_stale_resume_record_for_another_offer_is_ignored(root, server):
    data = image()
    o = offer_for(server, data)
    install_until_cut(root, o, ["program", 3])
    o2 = offer_for(server, image("1.2.0"), path="/other.bin", version="1.2.0")
    n = len(server.requests)
    r = install(root, o2)
    assert r["ok"], r
    assert "range" not in server.requests[n].headers
    assert boot(root)[:2] == ["ota_1", "1.2.0"]


def test_power_loss_after_write_before_set_boot(root, server):
    data = image()
    install_until_cut(root, offer_for(server, data), ["set_boot", 0])
    assert flash_at(root, OTA1, SIZE) == data      # complete, verified, but never selected
    assert_old_boots(root)
    assert_old_boots(root)


def test_power_loss_during_set_boot(root, server):
    install_until_cut(root, offer_for(server, image()), ["otadata", 0])
    assert_old_boots(root)


def test_power_loss_after_set_boot_before_confirmation(root, server):
    r = install(root, offer_for(server, image()))   # returns; the device dies before confirming
    assert r["ok"], r
    assert boot(root) == ["ota_1", NEW, "pending-verify"]
    assert_old_boots(root)                        # the bootloader rolled it back
