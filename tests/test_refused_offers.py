"""Refused offers (firmware/refused_offers.py): a corrupt or mis-versioned image is not fetched
and written again at every check, but after a wait (1 h, doubling); a changed offer or force
tries at once. Against the xiaozhi-style OTA server (tools/ota_server.py), counting its GETs."""
import time

import build_image
import ota_server
from conftest import mpy_json
from ota_helpers import make_root, ota_state, settings, spawn


def _run_checks(root, srv, checks, timeout=30):
    """Run the device until the server has answered `checks` OTA checks; its output."""
    proc = spawn(root)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and \
                len([r for r in srv.requests if r["endpoint"] == "ota"]) < checks:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    return out


def _gets(srv):
    return [r for r in srv.requests if r["endpoint"] == "firmware"]


def test_the_same_corrupt_image_is_fetched_once_in_two_checks(tmp_path):
    srv = ota_server.run_in_thread(auto_activate_s=0)
    try:
        img = bytearray(build_image.build_image("1.2.0", size=60000))
        img[30000] ^= 0x40                         # corrupt in the file itself, every time
        srv.set_offer("esp-box-3", "1.2.0", bytes(img))
        root = make_root(tmp_path, srv.ota_url, recheck_interval_s=0.5)
        out = _run_checks(root, srv, 3)
        gets = _gets(srv)
    finally:
        srv.stop()
    assert len([r for r in srv.requests if r["endpoint"] == "ota"]) >= 3, out
    assert len(gets) == 1, out                     # one GET in three checks
    assert "update to 1.2.0 failed: image digest does not verify" in out
    assert "firmware 1.2.0 was refused (image digest does not verify); next try in 60 min" in out
    assert "failure | firmware 1.2.0 was refused" in out or "problem: firmware 1.2.0" in out, out
    rec = settings(root)["ota_refused"]
    assert rec["version"] == "1.2.0" and rec["wait_ms"] == 3600000
    assert ota_state(root)[:2] == ["ota_0", "1.0.0"]


def test_a_changed_offer_is_tried_at_once_and_a_good_one_clears_the_record(tmp_path):
    srv = ota_server.run_in_thread(auto_activate_s=0)
    try:
        bad = bytearray(build_image.build_image("1.2.0", size=60000))
        bad[30000] ^= 0x40
        srv.set_offer("esp-box-3", "1.2.0", bytes(bad))
        root = make_root(tmp_path, srv.ota_url, recheck_interval_s=0.5)
        _run_checks(root, srv, 2)
        assert len(_gets(srv)) == 1
        srv.set_offer("esp-box-3", "1.2.1", build_image.build_image("1.2.1", size=60000))
        srv.clear_requests()
        out = _run_checks(root, srv, 1)
    finally:
        srv.stop()
    assert len(_gets(srv)) == 1 and "rebooting into it" in out, out
    assert "ota_refused" not in settings(root)


BACKOFF = r"""
import json
from firmware import refused_offers as R
class Store:
    def __init__(self):
        self.d = {}
        self.writes = 0
    def get(self, k, default=None):
        return self.d.get(k, default)
    def set(self, k, v):
        self.d[k] = v
        self.writes += 1
        return True
    def delete(self, k):
        return self.d.pop(k, None) is not None
class Board:
    now = 1800000000000
    settings = Store()
    def time_ms(self):
        return self.now
b = Board()
oid = R.offer_id("http://h/fw.bin?sig=1", "1.2.0", 60000, "ab" * 16)
out = [oid == R.offer_id("http://h/fw.bin?sig=2", "1.2.0", 60000, "AB" * 16),  # new signature
       oid == R.offer_id("http://h/fw.bin", "1.2.0", 60016, "ab" * 16)]        # another size
waits = []
for i in range(7):
    waits.append(R.refused(b, oid, "1.2.0", -2, "image digest does not verify"))
    b.now += waits[-1] - 1
    out.append(R.blocked(b, oid)[1] == -2)          # a millisecond before the wait is over
    b.now += 1
out.append(R.blocked(b, oid))
R.refused(b, oid, "1.2.0", -2, "x")
out += [R.blocked(b, oid, force=True), R.blocked(b, R.offer_id("u", "1.2.1")),
        R.refused(b, oid, "1.2.0", -1, "download failed"), R.refused(b, oid, "1.2.0", -3, "flash")]
b.now -= 10 ** 9                                       # the clock went back: try again
out.append(R.blocked(b, oid))
print(json.dumps([out, [w // 60000 for w in waits], b.settings.writes]))
"""


def test_backoff_doubles_and_only_image_faults_count():
    out, waits, writes = mpy_json(BACKOFF)
    assert out[:2] == [True, False]
    assert out[2:9] == [True] * 7 and out[9] is None
    assert out[10:14] == [None, None, None, None] and out[14] is None
    assert waits == [60, 120, 240, 480, 960, 1440, 1440]   # 1 h doubling, a day at most
    assert writes == 8                                       # one write per refusal, no other
