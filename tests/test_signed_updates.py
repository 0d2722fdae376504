"""Signed updates through the real update engine (updater.install on the simulated board, the
firmware under the MicroPython unix port, images from a local HTTP server): images signed by the
real espsecure install; every refused image is refused with its reason and -2 (or -4 for a lower
secure_version), the boot partition and otadata are untouched, and the target's first sector is
scrubbed. The signature checks themselves are in test_secure_boot.py."""
import gzip
import hashlib
import json
import os
import signal

import pytest

import build_image
import make_delta
import mkflash
import ota_helpers
import push
import sign_image
from conftest import run_mpy
from image_server import ImageServer
from mqtt_helpers import DEV, FAIL_STEPS, Device, amqtt, platforms, product  # noqa: F401
from signing import fleet_key  # noqa: F401
from test_secure_boot import SECTOR, Key, fix_crc, flip, sig_at, sign

OTA1 = 0x310000
OTADATA = (0xD000, 0x2000)
NEW = "1.1.0"

DRIVER = r"""
import json, os
from firmware.board import sim
from firmware import updater
a = json.loads(os.getenv('UPD_ARGS'))
b = sim.Board({})
b.flash.reset_counters()
try:
    label = updater.install(b, updater.Offer(**a['offer']), '1.0.0', chunk=a.get('chunk', 4096),
                            retries=1, config=a.get('config'), stage=a.get('stage'))
    out = {'ok': True, 'label': label}
except updater.UpdateError as e:
    out = {'ok': False, 'code': e.code, 'reason': e.reason}
out['counters'] = b.flash.counters()
print(json.dumps(out))
"""

BOOT = """
import json
from firmware.board import sim
b = sim.Board({})
print(json.dumps([b.Partition(b.Partition.RUNNING).info()[4], b.app_desc().version]))
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {name: Key(folder, name) for name in "AB"}


@pytest.fixture(scope="module")
def images(tmp_path_factory, keys):
    """Unsigned and espsecure-signed 1.1.0 images, and tampered copies of the signed one."""
    folder = tmp_path_factory.mktemp("img")
    plain = folder / "plain.bin"
    plain.write_bytes(build_image.build_image(NEW, size=150000, seed=5))
    out = {"unsigned": plain.read_bytes()}
    for name, ks in (("A", [keys["A"]]), ("B", [keys["B"]])):
        out[name] = sign(plain, folder / ("signed_%s.bin" % name), *ks).read_bytes()
    good = out["A"]
    out["flip_image"] = flip(good, 70000)
    out["flip_signature"] = fix_crc(flip(good, sig_at(good) + 50), 0)
    out["bad_crc"] = flip(good, sig_at(good, field=1196))
    out["truncated"] = good[:-200]
    return out


@pytest.fixture
def server():
    s = ImageServer()
    yield s
    s.stop()


def make_app_root(tmp_path, ota_url, **config):
    return ota_helpers.make_root(tmp_path, ota_url, **config)


def make_root(tmp_path, image=None, **sim):
    """A fresh board, powered on once: its first boot writes otadata (the bootloader's
    set_actual_ota_seq), so what follows may compare otadata before and after."""
    mkflash.make_device_root(str(tmp_path), version="1.0.0", image=image, **sim)
    assert booted(str(tmp_path)) == ["ota_0", "1.0.0"]
    return str(tmp_path)


def install(root, server, data, config=None, path="/fw.bin", gz=False, **args):
    body = gzip.compress(data) if gz else data
    server.files[path] = body
    args["offer"] = {"url": server.url(path), "version": NEW, "size": len(body),
                     "md5": hashlib.md5(body).hexdigest(), "force": args.pop("force", False),
                     "delta": args.pop("delta", False)}
    args["config"] = config
    proc = run_mpy(DRIVER, cwd=root, env={"UPD_ARGS": json.dumps(args)})
    lines = proc.stdout.strip().splitlines()
    r = json.loads(lines[-1])
    r["log"] = "\n".join(lines[:-1]) + proc.stderr
    return r


def flash_at(root, addr, n):
    with open(os.path.join(root, "flash.bin"), "rb") as f:
        f.seek(addr)
        return f.read(n)


def booted(root):
    return json.loads(run_mpy(BOOT, cwd=root).stdout.strip().splitlines()[-1])


def trust(*ks, required=None):
    return {"update": {"require_signature": required, "trusted_keys": [k.digest for k in ks]}}


def assert_refused(root, r, code, reason, otadata):
    assert not r["ok"] and r["code"] == code and r["reason"] == reason, r
    assert flash_at(root, *OTADATA) == otadata            # set_boot never ran
    assert booted(root) == ["ota_0", "1.0.0"]


@pytest.mark.parametrize("chunk,stage", [(4096, None), (1024, False), (65536, None)])
def test_espsecure_signed_image_installs(tmp_path, server, keys, images, chunk, stage):
    root = make_root(tmp_path)
    r = install(root, server, images["A"], trust(keys["A"]), chunk=chunk, stage=stage)
    assert r["ok"] and r["label"] == "ota_1", r
    assert "signature verified (block 0, key %s)" % keys["A"].digest in r["log"]
    assert flash_at(root, OTA1, len(images["A"])) == images["A"]
    assert booted(root) == ["ota_1", NEW]


def test_gzip_download_of_a_signed_image(tmp_path, server, keys, images):
    root = make_root(tmp_path)
    r = install(root, server, images["A"], trust(keys["A"]), path="/fw.bin.gz", gz=True)
    assert r["ok"], r
    assert booted(root) == ["ota_1", NEW]


@pytest.mark.parametrize("name,reason", [
    ("unsigned", "unsigned"),
    ("B", "unknown key"),
    ("flip_image", "hash mismatch"),
    ("flip_signature", "bad signature"),
    ("bad_crc", "bad signature block CRC"),
    ("truncated", "truncated signature sector"),
])
def test_refused_images_never_reach_the_boot_partition(tmp_path, server, keys, images, name,
                                                        reason):
    root = make_root(tmp_path)
    otadata = flash_at(root, *OTADATA)
    r = install(root, server, images[name], trust(keys["A"]))
    assert_refused(root, r, -2, reason, otadata)
    assert "image refused: %s" % reason in r["log"]
    assert flash_at(root, OTA1, SECTOR) == b"\xff" * SECTOR   # the whole image landed: scrubbed


@pytest.mark.parametrize("target,reason", [("A", None), ("B", "unknown key"),
                                           ("unsigned", "unsigned")])
def test_a_delta_is_judged_by_the_signature_of_the_image_it_makes(tmp_path, server, keys, images,
                                                                   target, reason):
    """The patch itself carries no signature (detools, esp_delta_ota header): the image the
    device rebuilds from it must verify, or nothing changes."""
    base = build_image.build_image("1.0.0", size=150000, seed=5)  # the same body as 1.1.0
    root = make_root(tmp_path, image=base)
    otadata = flash_at(root, *OTADATA)
    patch = make_delta.make_delta(base, images[target], "heatshrink")
    assert len(patch) < len(images[target]) // 10
    r = install(root, server, patch, trust(keys["A"]), path="/fw.patch", delta=True)
    if reason is None:
        assert r["ok"] and "signature verified" in r["log"], r
        assert flash_at(root, OTA1, len(images["A"])) == images["A"]
        assert booted(root) == ["ota_1", NEW]
    else:
        assert_refused(root, r, -2, reason, otadata)
        assert flash_at(root, OTA1, SECTOR) == b"\xff" * SECTOR   # the rebuilt image scrubbed


def test_efuse_digest_requires_signatures_whatever_the_config_says(tmp_path, server, keys, images):
    efuse = [keys["A"].digest]
    root = make_root(tmp_path / "a", secure_boot_digests=efuse)
    otadata = flash_at(root, *OTADATA)
    off = {"update": {"require_signature": False, "trusted_keys": []}}
    r = install(root, server, images["unsigned"], off)
    assert_refused(root, r, -2, "unsigned", otadata)
    r = install(root, server, images["A"], off)
    assert r["ok"], r
    root = make_root(tmp_path / "b", secure_boot_digests=efuse)
    r = install(root, server, images["B"], trust(keys["B"], required=False))  # config adds B
    assert r["ok"], r


def test_without_keys_unsigned_images_install_and_the_log_says_so(tmp_path, server, keys, images):
    root = make_root(tmp_path)
    r = install(root, server, images["unsigned"], {"update": {}})
    assert r["ok"], r
    assert r["log"].count("updates are unauthenticated") == 1
    r = install(root, server, images["B"], None)  # signed, no key known: installs unchecked
    assert r["ok"] and "signature verified" not in r["log"], r


def test_signatures_off_with_a_key_still_checks_signed_images(tmp_path, server, keys, images):
    cfg = trust(keys["A"], required=False)
    root = make_root(tmp_path / "a")
    r = install(root, server, images["unsigned"], cfg)
    assert r["ok"] and "unsigned image accepted" in r["log"], r
    root = make_root(tmp_path / "b")
    otadata = flash_at(root, *OTADATA)
    r = install(root, server, images["flip_image"], cfg)
    assert_refused(root, r, -2, "hash mismatch", otadata)


def bad_digest_image(folder):
    """The 1.1.0 image with its appended SHA-256 broken, as esptool reads it (the oracle)."""
    from esptool.bin_image import LoadFirmwareImage
    good = build_image.build_image(NEW, size=150000, seed=5)
    img = LoadFirmwareImage("esp32s3", good)
    assert img.append_digest and img.stored_digest == img.calc_digest
    bad = flip(good, len(good) - 1)
    img = LoadFirmwareImage("esp32s3", bad)
    assert img.stored_digest != img.calc_digest
    path = folder / "bad_digest.bin"
    path.write_bytes(bad)
    return path


def test_a_required_signature_stands_in_for_the_stream_digest_and_set_boot_still_checks_it(
        tmp_path, server, keys):
    """With signatures required the stream does not hash the image a second time: an image
    signed over a broken appended digest passes the signature, and set_boot's verify (ESP-IDF's
    esp_image_verify on a board) refuses it before the boot partition changes."""
    signed = sign(bad_digest_image(tmp_path), tmp_path / "signed.bin", keys["A"]).read_bytes()
    root = make_root(tmp_path / "dev")
    otadata = flash_at(root, *OTADATA)
    r = install(root, server, signed, trust(keys["A"]))
    assert "signature verified" in r["log"], r
    assert_refused(root, r, -2, "image digest does not verify", otadata)


def test_unsigned_image_with_signatures_optional_still_has_its_digest_checked_in_the_stream(
        tmp_path, server, keys):
    root = make_root(tmp_path / "dev")
    otadata = flash_at(root, *OTADATA)
    r = install(root, server, bad_digest_image(tmp_path).read_bytes(),
                trust(keys["A"], required=False))
    assert "unsigned image accepted" in r["log"], r
    assert_refused(root, r, -2, "image digest does not verify", otadata)
    assert flash_at(root, OTA1, SECTOR) == b"\xff" * SECTOR


@pytest.mark.parametrize("running,efuse,offered,ok", [
    (3, 0, 2, False), (3, 0, 3, True), (3, 0, 4, True), (0, 5, 4, False), (0, 5, 5, True)])
def test_secure_version_floor_holds_even_with_force(tmp_path, server, running, efuse, offered, ok):
    root = make_root(tmp_path, image=build_image.build_image("1.0.0", secure_version=running),
                     efuse_secure_version=efuse)
    otadata = flash_at(root, *OTADATA)
    data = build_image.build_image(NEW, size=100000, secure_version=offered)
    r = install(root, server, data, None, force=True)
    if ok:
        assert r["ok"], r
        return
    assert_refused(root, r, -4, "secure_version %d is below %s %d" % (
        offered, "efuse SECURE_VERSION" if efuse else "the running image's", max(running, efuse)),
        otadata)
    assert r["counters"]["erase_64k"] == r["counters"]["erase_4k"] == 0  # refused before erasing


# ---- the OTA-check offer and MQTT pushes, through the whole app ----------------------------------

@pytest.fixture
def ota_srv():
    import ota_server
    s = ota_server.run_in_thread(auto_activate_s=0)
    yield s
    s.stop()


def test_ota_check_offer_of_a_signed_image_installs(tmp_path, ota_srv, fleet_key):
    ota_srv.set_offer("esp-box-3", "1.2.0", fleet_key.sign(build_image.build_image("1.2.0")))
    root = make_app_root(tmp_path, ota_srv.ota_url, update=fleet_key.update_config())
    first = ota_helpers.boot(root, run_until="listen")
    assert first.returncode == 3, first.stdout + first.stderr     # rebooted into the update
    assert "signature verified (block 0, key %s)" % fleet_key.digest in first.stdout
    assert ota_helpers.boot(root, run_until="listen").returncode == 0
    assert ota_helpers.ota_state(root) == ["ota_1", "1.2.0", "valid"]


def test_ota_check_offer_of_an_unsigned_image_is_refused(tmp_path, ota_srv, fleet_key):
    ota_srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
    root = make_app_root(tmp_path, ota_srv.ota_url, update=fleet_key.update_config())
    p = ota_helpers.boot(root, run_until="listen", timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "update to 1.2.0 failed: unsigned" in p.stdout
    assert "image refused: unsigned: no signature sector after the image" in p.stdout
    assert ota_helpers.ota_state(root)[:2] == ["ota_0", "1.0.0"]
    assert flash_at(root, OTA1, SECTOR) == b"\xff" * SECTOR


def test_the_app_says_once_per_boot_that_updates_are_unauthenticated(tmp_path, ota_srv):
    ota_srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
    root = make_app_root(tmp_path, ota_srv.ota_url)
    first = ota_helpers.boot(root, run_until="listen")
    assert first.returncode == 3, first.stdout + first.stderr     # installed, unsigned
    assert first.stdout.count("updates are unauthenticated") == 1
    second = ota_helpers.boot(root, run_until="listen")
    assert second.stdout.count("updates are unauthenticated") == 1


def test_mqtt_push_of_an_image_signed_by_another_key_is_refused(amqtt, product, platforms,
                                                                 tmp_path, fleet_key, keys):
    dev = Device(tmp_path, amqtt, product, None, update=fleet_key.update_config())
    plat = platforms(amqtt, product)
    import ota_server
    srv = ota_server.run_in_thread()
    try:
        other = sign_image.sign_bytes(build_image.build_image("1.1.0", size=150000),
                                      [str(keys["B"].pem)])
        proc = dev.boot(20000)
        assert plat.wait_report(DEV, timeout=15), Device.read(proc)
        token = plat.push_image(DEV, "1.1.0", other, push.ImageHost(server=srv), "single")
        got = plat.wait_step(DEV, FAIL_STEPS, token, timeout=20)
        assert got and got["step"] == -2 and got["desc"] == "unknown key", Device.read(proc)
        proc.send_signal(signal.SIGINT)
        rc, log = dev.finish(proc)
    finally:
        srv.stop()
    assert "update to 1.1.0 failed (-2): unknown key" in log
    assert dev.ota1()[:SECTOR] == b"\xff" * SECTOR
    assert "mqtt_ota_pending" not in dev.settings()
    assert "boot 1.0.0 state" in dev.run(0)[1]


def test_a_signed_update_resumed_after_a_power_cut_verifies(tmp_path, server, keys, images):
    """After a reset the signature's SHA-256 is rebuilt from what is on flash (the resume
    re-hash), then the rest streams from where it stopped: the image verifies and boots."""
    import test_updater as tu
    root = make_root(tmp_path)
    cfg = trust(keys["A"])
    o = tu.offer_for(server, images["A"])
    tu.install_until_cut(root, o, ["program", 3], config=cfg)   # 128 KiB persisted
    with open(os.path.join(root, "settings.json")) as f:
        assert json.load(f)["ota_resume"]["written"] == 131072
    n = len(server.requests)
    r = tu.install(root, o, config=cfg)
    assert r["ok"], r
    assert server.requests[n].headers["range"] == "bytes=131072-"
    assert booted(root) == ["ota_1", NEW]


def test_ota_server_with_a_sign_key_serves_offers_signed(tmp_path, fleet_key):
    """tools/ota_server.py sign_keys (--sign-key): an unsigned offer is served signed by
    espsecure, an already signed one as it is."""
    import ota_server
    srv = ota_server.run_in_thread(auto_activate_s=0, sign_keys=[str(fleet_key.pem)])
    try:
        signed_elsewhere = fleet_key.sign(build_image.build_image("1.3.0"))
        srv.register_image("pre.bin", signed_elsewhere)
        assert srv._lookup_blob("pre.bin").data == signed_elsewhere   # not signed twice
        srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
        root = make_app_root(tmp_path, srv.ota_url, update=fleet_key.update_config())
        first = ota_helpers.boot(root, run_until="listen")
        assert first.returncode == 3, first.stdout + first.stderr
        assert "signature verified (block 0, key %s)" % fleet_key.digest in first.stdout
    finally:
        srv.stop()


def test_policy_without_keys_loads_no_crypto_and_an_unreadable_efuse_fails_closed():
    r = json.loads(run_mpy(r"""
import json, sys
from firmware.update import signature_stage as ss
class Board:
    def __init__(self, digests):
        self.digests = digests
    def secure_boot_digests(self):
        if self.digests is None:
            raise OSError("efuse read failed")
        return self.digests
out = {}
for name, cfg in (("none", None), ("empty", {"update": {}}),
                  ("off", {"update": {"require_signature": False, "trusted_keys": []}})):
    p = ss.policy(Board([]), cfg)
    out[name] = [p.check() is None, "firmware.secure_boot" in sys.modules]
p = ss.policy(Board(None), {"update": {"require_signature": False}})
out["efuse_error"] = [p.required, list(p.trusted), p.errors, p.check() is not None]
p = ss.policy(Board([]), {"update": {"require_signature": True}})
out["required"] = [p.required, p.check() is not None]
print(json.dumps(out))
""").stdout.strip().splitlines()[-1])
    assert r["none"] == r["empty"] == r["off"] == [True, False]   # secure_boot never imported
    assert r["efuse_error"] == [True, [], ["cannot read the efuse key digests: efuse read failed"],
                                True]
    assert r["required"] == [True, True]
