"""Delta updates through the real update engine (firmware/updater.py with
firmware/update/delta_source.py) on the unix port: patches made by the real detools package
(tools/make_delta.py) are downloaded from a local server, applied against the simulated board's
running image, written, read back and committed. Refusals leave the boot partition untouched
with the right progress code; power cuts (SIGKILL mid flash operation, as in test_updater.py)
are followed by a reboot and a retry that completes."""
import hashlib
import io
import signal

import detools
import pytest

import build_image
import make_delta
import mkflash
import ota_server
import push
from mqtt_helpers import (DEV, FAIL_STEPS, REBOOT, Device, amqtt, blank,  # noqa: F401
                          firmware_requests, ota, platforms, product)
from ota_helpers import boot as ota_boot, check as ota_check_once, make_root as make_ota_root
from ota_helpers import ota_state, settings
from test_delta import code, edit
from test_ota_server import ota as ota_post, req
from test_updater import (OTA1, assert_old_boots, boot, flash_at, install,  # noqa: F401
                          install_until_cut, minimal_erases, offer_for, server)

KIB = 1024
NEW = "1.1.0"
BASE = build_image.build_image("1.0.0", payload=code(11, 190 * KIB))
TARGET = build_image.build_image(NEW, payload=edit(code(11, 190 * KIB), 70000, 3000, code(12, 3300)))
OTHER = build_image.build_image("0.9.0", payload=code(13, 190 * KIB))


@pytest.fixture
def root(tmp_path):
    return mkflash.make_device_root(str(tmp_path), image=BASE)


def patch(compression="heatshrink", base=BASE, new=TARGET, header=True):
    return make_delta.make_delta(base, new, compression, header=header)


def delta_offer(server, data, path="/fw.patch", **kw):
    return offer_for(server, data, path, delta=True, **kw)


def refused(root, r, code, text):
    assert not r["ok"], r
    assert r["code"] == code and text in r["reason"], r
    assert r["resume"] is None
    assert_old_boots(root)


def test_the_patch_is_far_smaller_than_the_image():
    assert len(patch()) < len(TARGET) // 10


@pytest.mark.parametrize("compression", ["heatshrink", "none", "crle"])
def test_delta_update_installs_the_target_image(root, server, compression):
    data = patch(compression)
    r = install(root, delta_offer(server, data, sha256=hashlib.sha256(TARGET).hexdigest()))
    assert r["ok"] and r["label"] == "ota_1", r
    c = r["counters"]
    blocks, sectors = minimal_erases(len(TARGET))
    assert (c["erase_64k"], c["erase_4k"]) == (blocks, sectors + 1)
    assert c["programmed_bytes"] == len(TARGET) + 32          # each byte once, + otadata
    assert flash_at(root, OTA1, len(TARGET)) == TARGET
    assert r["progress"][-1][:2] == [len(TARGET), len(TARGET)]
    assert r["resume"] is None and len(server.requests) == 1
    assert boot(root) == ["ota_1", NEW, "pending-verify"]


def test_from_sha256_in_the_offer_and_no_header(root, server):
    base_sha = make_delta.base_digest(BASE).hex()
    r = install(root, delta_offer(server, patch(header=False), from_sha256=base_sha))
    assert r["ok"], r
    assert boot(root)[:2] == ["ota_1", NEW]


@pytest.mark.parametrize("compression,where", [("none", 30), ("none", 0.5), ("heatshrink", 0.7)])
def test_dropped_connection_restarts_the_patch_without_reprogramming(root, server, compression,
                                                                     where):
    data = patch(compression)   # dropped inside the esp_delta_ota header, or mid image
    server.plan = [{"close_at": where if where > 1 else int(len(data) * where)}]
    r = install(root, delta_offer(server, data))
    assert r["ok"], r
    assert [q.headers.get("range") for q in server.requests] == [None, None]  # from byte 0
    assert r["counters"]["programmed_bytes"] == len(TARGET) + 32
    assert flash_at(root, OTA1, len(TARGET)) == TARGET


# ---- refusals: the boot partition stays, with the iThings progress code -----------------------

def test_wrong_base_is_refused_before_any_erase(root, server):
    r = install(root, delta_offer(server, patch(base=OTHER)))
    refused(root, r, -4, "patch is for another base image")
    assert r["counters"]["erase_64k"] == r["counters"]["erase_4k"] == 0


def test_from_sha256_of_another_image_is_refused(root, server):
    other = make_delta.base_digest(OTHER).hex()
    r = install(root, delta_offer(server, patch(header=False), from_sha256=other))
    refused(root, r, -4, "patch is for another base image")
    assert r["counters"]["erase_4k"] == 0


def test_patch_naming_no_base_is_refused(root, server):
    r = install(root, delta_offer(server, patch(header=False)))
    refused(root, r, -4, "patch is for another base image")


def test_truncated_patch(root, server):
    data = patch("none")
    short = data[:len(data) * 2 // 3]
    r = install(root, delta_offer(server, short))   # offer md5/size of the short file
    refused(root, r, -2, "patch ends early")
    assert flash_at(root, OTA1, 4096) == b"\xff" * 4096    # scrubbed


def test_md5_mismatch(root, server):
    data = bytearray(patch())
    o = delta_offer(server, bytes(data))
    data[len(data) // 2] ^= 0x40
    server.files["/fw.patch"] = bytes(data)
    r = install(root, o)
    assert not r["ok"] and r["code"] == -2, r
    assert_old_boots(root)


def test_corrupt_patch_that_matches_its_md5(root, server):
    data = bytearray(patch("none"))
    data[-40] ^= 0xFF   # a diff byte: the image comes out wrong, the patch is well formed
    r = install(root, delta_offer(server, bytes(data), sha256=hashlib.sha256(TARGET).hexdigest()))
    refused(root, r, -2, "sha256 mismatch")


def test_corrupt_patch_structure(root, server):
    data = patch("none")
    r = install(root, delta_offer(server, data + b"\0\0"))   # bytes after the end of the patch
    refused(root, r, -2, "data after the end of the patch")


def test_patch_that_writes_past_the_partition(root, server):
    huge = build_image.build_image(NEW, size=4 << 20)   # ota_1 is 3 MiB
    r = install(root, delta_offer(server, patch("heatshrink", new=huge)))
    refused(root, r, -2, "more than the")
    assert r["counters"]["erase_4k"] == 0


def test_result_that_fails_its_sha256(root, server):
    r = install(root, delta_offer(server, patch(), sha256="ab" * 32))
    refused(root, r, -2, "sha256 mismatch")
    assert flash_at(root, OTA1, 4096) == b"\xff" * 4096


def test_result_of_another_version_than_offered(root, server):
    r = install(root, delta_offer(server, patch(), version="1.2.0"))
    refused(root, r, -4, "offer says")


# ---- power loss mid apply, reboot, retry --------------------------------------------------------

@pytest.mark.parametrize("cut,stage", [
    (["erase", 1], False), (["erase", 20], False), (["program", 1], False),
    (["program", 25], False), (["program", 2], True), (["program", 47], False),
    (["set_boot", 0], None), (["otadata", 0], None)])
def test_power_loss_during_apply_then_retry_completes(root, server, cut, stage):
    o = delta_offer(server, patch())
    assert install_until_cut(root, o, cut, stage=stage, persist_ms=0).startswith("POWERCUT")
    assert_old_boots(root)
    assert "ota_resume" not in settings(root)          # no resume record claims delta bytes
    r = install(root, o, stage=stage, persist_ms=0)
    assert r["ok"], r
    assert [q.headers.get("range") for q in server.requests] == [None, None]
    c = r["counters"]
    assert c["programmed_bytes"] == len(TARGET) + 32    # one fresh pass, each byte once
    assert flash_at(root, OTA1, len(TARGET)) == TARGET
    assert boot(root) == ["ota_1", NEW, "pending-verify"]


# ---- iThings isDiff 2 pushes, end to end (real broker, tools/push.py as the platform) ----------

def test_isdiff_2_push_installs_and_confirms(amqtt, ota, product, platforms, tmp_path):  # noqa: F811
    dev = Device(tmp_path, amqtt, product, ota)        # runs build_image("1.0.0")
    plat = platforms(amqtt, product)
    new = build_image.build_image(NEW)
    data = make_delta.make_delta(build_image.build_image("1.0.0"), new)
    proc = dev.boot(30000)
    assert plat.wait_report(DEV, "1.0.0", timeout=15), Device.read(proc)
    token = plat.push_image(DEV, NEW, data, push.ImageHost(server=ota), "seed", is_diff=2)
    rc, log = dev.finish(proc)
    assert rc == REBOOT and "installed 1.1.0 in ota_1" in log, log
    rc, log2 = dev.run(3000)
    assert "boot 1.1.0 state pending-verify" in log2
    assert plat.wait_step(DEV, [100], token, timeout=5), log2


def test_isdiff_2_push_for_another_base_is_refused_then_version_reported(
        amqtt, ota, product, platforms, tmp_path):  # noqa: F811
    dev = Device(tmp_path, amqtt, product, ota)
    plat = platforms(amqtt, product)
    data = make_delta.make_delta(OTHER, build_image.build_image(NEW))
    proc = dev.boot(20000)
    assert plat.wait_report(DEV, "1.0.0", timeout=15), Device.read(proc)
    n = len(plat.reports(DEV))
    token = plat.push_image(DEV, NEW, data, push.ImageHost(server=ota), "single", is_diff=2)
    got = plat.wait_step(DEV, FAIL_STEPS, token, timeout=15)
    assert got and got["step"] == -4, Device.read(proc)
    assert got["desc"] == "patch is for another base image"
    # The platform learns the version it keeps running, to send a full image instead.
    assert plat.wait(lambda: [r for r in plat.reports(DEV)[n:] if r.get("version") == "1.0.0"],
                     timeout=10)
    proc.send_signal(signal.SIGINT)
    dev.finish(proc)
    assert blank(dev.ota1()) and "mqtt_ota_pending" not in dev.settings()


# ---- OTA check firmware.delta, end to end (main.py against tools/ota_server.py) -----------------

@pytest.fixture
def srv():
    s = ota_server.run_in_thread(auto_activate_s=0)
    yield s
    s.stop()


def offer_with_delta(srv, patch_bytes, from_sha256=None, new=None):
    new = new or build_image.build_image("1.2.0")
    srv.set_offer("esp-box-3", "1.2.0", new)
    base = build_image.build_image("1.0.0")     # what make_root's device runs
    srv.set_delta("esp-box-3", from_sha256 or make_delta.base_digest(base).hex(), patch_bytes)
    return base, new


def downloads(srv):
    return [r["path"].rsplit(".", 1)[-1] for r in firmware_requests(srv)]


def test_ota_check_prefers_the_delta_when_the_running_image_is_its_base(tmp_path, srv):
    new = build_image.build_image("1.2.0")
    offer_with_delta(srv, make_delta.make_delta(build_image.build_image("1.0.0"), new), new=new)
    root = make_ota_root(tmp_path, srv.ota_url)
    first = ota_boot(root, run_until="listen")
    assert first.returncode == 3, first.stdout + first.stderr
    assert downloads(srv) == ["patch"]                  # the full image was never fetched
    assert ota_boot(root, run_until="listen").returncode == 0
    assert ota_state(root) == ["ota_1", "1.2.0", "valid"]


def test_ota_check_falls_back_to_the_full_image_when_the_delta_fails(tmp_path, srv):
    new = build_image.build_image("1.2.0")
    good = make_delta.make_delta(build_image.build_image("1.0.0"), new, "none")
    bad = bytearray(good)
    bad[-40] ^= 0xFF    # a well-formed patch that makes the wrong image: its read-back is fine,
    offer_with_delta(srv, bytes(bad), new=new)   # the image's own SHA-256 is not
    root = make_ota_root(tmp_path, srv.ota_url)
    first = ota_boot(root, run_until="listen")
    assert first.returncode == 3, first.stdout + first.stderr
    assert "delta update failed" in first.stdout and "downloading the full image" in first.stdout
    assert downloads(srv) == ["patch", "bin"]
    assert ota_state(root)[:2] == ["ota_1", "1.2.0"]


def test_ota_check_skips_a_delta_for_another_base(tmp_path, srv):
    offer_with_delta(srv, b"never fetched", from_sha256="ab" * 32)
    root = make_ota_root(tmp_path, srv.ota_url)
    first = ota_boot(root, run_until="listen")
    assert first.returncode == 3, first.stdout + first.stderr
    assert "delta offered for another base image" in first.stdout
    assert downloads(srv) == ["bin"]


def test_ota_check_refuses_a_malformed_delta_section(tmp_path, srv):
    offer_with_delta(srv, b"x", from_sha256="not-a-digest")
    r, log = ota_check_once(make_ota_root(tmp_path, srv.ota_url))
    assert not r["ok"] and r["reason"] == \
        "bad answer: firmware.delta.from_sha256 is not a SHA-256 (64 hex digits)", r
    assert downloads(srv) == []


def test_ota_server_cli_offers_a_delta_built_with_detools(tmp_path, srv):
    base_bin, new_bin = tmp_path / "base.bin", tmp_path / "new.bin"
    base_bin.write_bytes(BASE)
    new_bin.write_bytes(TARGET)
    args = ota_server.build_parser().parse_args(
        ["--offer", "esp-box-3=1.1.0:%s" % new_bin, "--delta", "esp-box-3=%s" % base_bin])
    ota_server.configure(srv, args)
    fw = ota_post(srv)[1]["firmware"]
    d = fw["delta"]
    assert d["from_sha256"] == make_delta.base_digest(BASE).hex()
    got = req(srv, "GET", d["url"].split(str(srv.port), 1)[1])[2]
    assert len(got) == d["size"] and hashlib.md5(got).hexdigest() == d["md5"]
    out = io.BytesIO()   # the oracle: detools itself applies the served patch (header off)
    detools.apply_patch(io.BytesIO(BASE), io.BytesIO(got[make_delta.HEADER_LEN:]), out)
    assert out.getvalue() == TARGET
