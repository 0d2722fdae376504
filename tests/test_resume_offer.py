"""An update cut by a reset continues by itself (firmware/saved_offer.py, hooked into
ithings_ota.Agent): after a SIGKILL of the device mid-download, the next boot takes the same
push up again from the updater's saved offset -- the server sees a Range request from there,
not from 0 -- and reports progress under the push's msgToken; a pre-signed URL that expired
meanwhile is reported -1 without a download; a reset loop is given up after 3 resumed tries."""
import datetime
import json
import time

import pytest

import build_image
from conftest import mpy_json
from mqtt_helpers import (DEV, REBOOT, Device, amqtt, ota, platforms, product,  # noqa: F401
                          push_file, slow, steps)

SIZE = 1024 * 1024
RATE = 80 * 1024                                     # ~13 s for the image: steps ~8 % apart


def _kill_when(dev, proc, plat, token, pct, timeout=30):
    """SIGKILL the device (a power cut) at about `pct` % of progress (steps come once a second,
    ~8 % apart: the window is wide enough to catch one before 99, "installed")."""
    ok = plat.wait(lambda: any(pct - 3 <= s < 99 for s in steps(plat, DEV, token)),
                   timeout=timeout)
    proc.kill()                                      # our own child, by its Popen
    proc.wait()
    assert ok, Device.read(proc)
    return dev.settings()


def _pushed(broker, ota, product, platforms, slow, root, query=""):
    """A listening device that was pushed 1.1.0 from a throttled file server."""
    files = slow(RATE)
    image = build_image.build_image("1.1.0", size=SIZE)
    url = files.add("app.bin", image) + query
    dev = Device(root, broker, product, ota)
    plat = platforms(broker, product)
    proc = dev.boot(60000)
    assert plat.wait_report(DEV, timeout=15)
    return files, dev, plat, proc, push_file(plat, DEV, "1.1.0", url, image)


def _firmware_gets(files, since):
    return [(t, path, rng) for t, path, rng in files.requests if t >= since]


@pytest.mark.parametrize("pct", [25, 50, 90])
def test_a_download_cut_by_a_reset_resumes_from_its_saved_offset(amqtt, ota, product, platforms,
                                                                  slow, tmp_path, pct):
    files, dev, plat, proc, token = _pushed(amqtt, ota, product, platforms, slow, tmp_path)
    saved = _kill_when(dev, proc, plat, token, pct)
    written = saved["ota_resume"]["written"]
    assert written > 0 and saved["ota_offer"]["token"] == token, saved
    t_restart = time.time()
    rc, log = dev.run(60000)
    assert rc == REBOOT, log
    assert "interrupted by a reset; resuming it (start 2 of 4)" in log, log
    assert "resuming the download at %d bytes" % written in log, log
    gets = _firmware_gets(files, t_restart)
    assert [g[2] for g in gets] == ["bytes=%d-" % written], gets   # from there, not from 0
    after = [p for p in plat.progress(DEV, token) if p["time"] >= t_restart]
    assert after and after[-1]["step"] == 99, after                # under the push's token
    assert "ota_offer" not in dev.settings()
    rc, log = dev.run(4000)                                         # the new image confirms
    assert plat.wait_step(DEV, [100], token, timeout=10), log
    assert -1 not in steps(plat, DEV, token)


def test_a_delta_push_cut_by_a_reset_restarts_its_patch_and_installs(amqtt, ota, product,
                                                                     platforms, slow, tmp_path):
    """The resumed push is still a delta (isDiff 2): the patch is fetched again from byte 0
    (a delta keeps no resume record) and applied to the running image, not written as an image."""
    import make_delta
    files = slow(RATE)
    new = build_image.build_image("1.1.0", size=SIZE)
    patch = make_delta.make_delta(build_image.build_image("1.0.0"), new)  # what Device runs
    url = files.add("app.patch.bin", patch)
    dev = Device(tmp_path, amqtt, product, ota)
    plat = platforms(amqtt, product)
    proc = dev.boot(60000)
    assert plat.wait_report(DEV, timeout=15)
    token = push_file(plat, DEV, "1.1.0", url, patch, is_diff=2)
    saved = _kill_when(dev, proc, plat, token, 40)
    assert saved["ota_offer"]["delta"] is True, saved
    t_restart = time.time()
    rc, log = dev.run(60000)
    assert rc == REBOOT and "resuming it (start 2 of 4)" in log, log
    assert [g[2] for g in _firmware_gets(files, t_restart)] == [None], log  # the whole patch
    assert "installed 1.1.0 in ota_1" in log, log
    rc, log = dev.run(4000)
    assert "boot 1.1.0" in log and plat.wait_step(DEV, [100], token, timeout=10), log


def test_a_sha256_push_cut_by_a_reset_is_still_checked_against_its_sha256(
        amqtt, ota, product, platforms, slow, tmp_path):
    """signMethod SHA256 survives the reset: a file that does not match the pushed SHA-256 is
    refused (-2) after the resumed download too, and the old image keeps running."""
    import hashlib
    files = slow(RATE)
    image = build_image.build_image("1.1.0", size=SIZE)
    url = files.add("app.bin", image)
    dev = Device(tmp_path, amqtt, product, ota)
    plat = platforms(amqtt, product)
    proc = dev.boot(60000)
    assert plat.wait_report(DEV, timeout=15)
    token = plat.push(DEV, "1.1.0", url, len(image), hashlib.sha256(b"other").hexdigest(),
                      sign_method="SHA256", name="app.bin")
    saved = _kill_when(dev, proc, plat, token, 40)
    assert saved["ota_offer"]["sha256"] == hashlib.sha256(b"other").hexdigest(), saved
    rc, log = dev.run(20000)
    assert "resuming it (start 2 of 4)" in log, log
    got = plat.wait_step(DEV, [-2], token, timeout=10)
    assert got and got["desc"] == "sha256 mismatch", (got, log)
    assert "installed" not in log, log


def _amz_date(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def test_an_expired_presigned_url_is_reported_and_not_downloaded(amqtt, ota, product, platforms,
                                                                  slow, tmp_path):
    query = "?X-Amz-Date=%s&X-Amz-Expires=6&X-Amz-Signature=ab" % _amz_date(time.time() - 1)
    files, dev, plat, proc, token = _pushed(amqtt, ota, product, platforms, slow, tmp_path, query)
    t0 = time.time()
    _kill_when(dev, proc, plat, token, 10)
    time.sleep(max(0, 6.5 - (time.time() - t0)))                    # the URL expires meanwhile
    t_restart = time.time()
    rc, log = dev.run(3000)
    assert rc == 0, log
    got = plat.wait_step(DEV, [-1], token, timeout=5)
    assert got and got["desc"] == "interrupted; offer expired", got
    assert not _firmware_gets(files, t_restart)                     # no download
    assert "reportInfo version 1.0.0" in log
    s = dev.settings()
    assert "ota_offer" not in s and "mqtt_ota_pending" not in s


def test_a_reset_loop_stops_after_three_resumed_tries(amqtt, ota, product, platforms, slow,
                                                      tmp_path):
    files, dev, plat, proc, token = _pushed(amqtt, ota, product, platforms, slow, tmp_path)
    for boot in range(4):                            # the first download and 3 resumed ones
        n = len(files.requests)
        if boot:
            proc = dev.boot(60000)
        deadline = time.time() + 20
        while len(files.requests) == n and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)                              # it downloads a little, then "resets"
        proc.kill()
        proc.wait()
        assert len(files.requests) == n + 1, Device.read(proc)
    n = len(files.requests)
    rc, log = dev.run(3000)
    assert "interrupted by a reset: interrupted by a reset 4 times; gave up" in log, log
    assert len(files.requests) == n                  # no fifth download
    got = plat.wait_step(DEV, [-1], token, timeout=5)
    assert got and got["desc"] == "interrupted by a reset 4 times; gave up", got


def test_presigned_url_expiry():
    out = mpy_json("""
import json
from firmware import saved_offer as s
print(json.dumps([s.expiry_ms("https://b/f.bin?X-Amz-Date=20261203T120000Z&X-Amz-Expires=3600&x=1"),
                  s.expiry_ms("https://b/f.bin?x-amz-date=19700101T000001Z&x-amz-expires=1"),
                  s.expiry_ms("https://b/f.bin?X-Amz-Date=20240229T235959Z&X-Amz-Expires=0"),
                  s.expiry_ms("https://b/f.bin?X-Amz-Expires=60"), s.expiry_ms("https://b/f.bin"),
                  s.expiry_ms("https://b/f.bin?X-Amz-Date=2026-12-03&X-Amz-Expires=60"),
                  s.why_not({"url": "https://b/f?X-Amz-Date=20261203T120000Z&X-Amz-Expires=60",
                             "starts": 1}, 0),
                  s.why_not({"url": "https://b/f?X-Amz-Date=20200103T120000Z&X-Amz-Expires=60",
                             "starts": 1}, 1600000000000)]))
""")
    def utc_ms(*a):
        return int(datetime.datetime(*a, tzinfo=datetime.timezone.utc).timestamp() * 1000)
    assert out[0] == utc_ms(2026, 12, 3, 13, 0, 0)
    assert out[1] == 2000
    assert out[2] == utc_ms(2024, 2, 29, 23, 59, 59)
    assert out[3:6] == [None, None, None]
    assert out[6] is None                            # a clock never set cannot judge expiry
    assert out[7] == "interrupted; offer expired"


def test_an_ota_check_offer_cut_by_a_reset_continues_at_the_next_boot(slow, tmp_path):
    import ota_server
    from ota_helpers import boot, make_root, settings, spawn
    files = slow(RATE)
    image = build_image.build_image("1.2.0", size=SIZE)
    srv = ota_server.run_in_thread(auto_activate_s=0)
    try:
        srv.set_offer("esp-box-3", "1.2.0", files.add("app.bin", image))
        root = make_root(tmp_path, srv.ota_url)
        proc = spawn(root)
        deadline = time.time() + 30
        while time.time() < deadline and not (settings(root).get("ota_resume") or {}).get("written"):
            time.sleep(0.05)
        time.sleep(1.2)                               # a little further, then the power goes
        proc.kill()
        proc.communicate(timeout=10)
        saved = settings(root)
        written = saved["ota_resume"]["written"]
        assert written and saved["ota_offer"]["starts"] == 1, saved
        t_restart = time.time()
        again = boot(root, run_until="listen", timeout=60)
        assert again.returncode == REBOOT, again.stdout + again.stderr
        assert "resuming the download at %d bytes" % written in again.stdout
        assert [g[2] for g in _firmware_gets(files, t_restart)] == ["bytes=%d-" % written]
        assert "ota_offer" not in settings(root)
    finally:
        srv.stop()


def test_an_ota_check_offer_in_a_reset_loop_is_not_started_again(tmp_path):
    import ota_server
    from conftest import run_mpy
    from ota_helpers import boot, make_root, settings
    srv = ota_server.run_in_thread(auto_activate_s=0)
    try:
        url = "http://127.0.0.1:1/app.bin"          # never fetched
        srv.set_offer("esp-box-3", "1.2.0", url)
        root = make_root(tmp_path, srv.ota_url)
        rec = {"source": "check", "token": None, "version": "1.2.0", "url": url, "md5": None,
               "size": None, "starts": 4}
        run_mpy("import json\nfrom firmware.board import sim\n"
                "sim.Board({}).settings.set('ota_offer', json.loads(%r))" % json.dumps(rec), cwd=root)
        p = boot(root, run_until="listen", timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "update to 1.2.0 not started: interrupted by a reset 4 times; gave up" in p.stdout
        assert "update 1.0.0 -> 1.2.0" not in p.stdout and settings(root)["ota_offer"] == rec
    finally:
        srv.stop()
