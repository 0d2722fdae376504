"""Activation on the simulated board against the local OTA server: v1 (code entered through the
server's admin API), v2 (HMAC-SHA256 proof of the efuse key), expiring codes and failures."""
import queue
import re
import threading
import time

import pytest

import ota_server
from ota_helpers import make_root, spawn

SERIAL = "SN-ESPBOX3-000123"
KEY_HEX = "11" * 32
DEV = "D4:06:06:B6:A9:FB"
CODE_LINE = re.compile(r"ACTIVATION CODE (\d{6})")


class Device:
    """main.py running in a device root; lines are collected by a thread so waits can time out."""

    def __init__(self, root, run_until="listen"):
        self.proc = spawn(root, run_until)
        self.lines = []
        self._q = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, pattern, timeout=20):
        rx = re.compile(pattern)
        end = time.time() + timeout
        while time.time() < end:
            try:
                line = self._q.get(timeout=max(0.01, end - time.time()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("device exited waiting for %r:\n%s" % (pattern, self.log()))
            self.lines.append(line)
            m = rx.search(line)
            if m:
                return m
        raise AssertionError("timeout waiting for %r:\n%s" % (pattern, self.log()))

    def finish(self, timeout=20):
        rc = self.proc.wait(timeout)
        while True:
            try:
                line = self._q.get(timeout=2)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return rc

    def log(self):
        return "\n".join(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def device():
    made = []

    def make(root, run_until="listen"):
        d = Device(root, run_until)
        made.append(d)
        return d
    yield make
    for d in made:
        d.kill()


def test_v1_code_shown_until_entered_through_the_admin_api(tmp_path, device):
    srv = ota_server.run_in_thread()
    try:
        root = make_root(tmp_path, srv.ota_url)
        dev = device(root)
        code = dev.wait_for(CODE_LINE).group(1)
        assert srv.device(DEV)["code"] == code
        dev.wait_for(r"POST .*/xiaozhi/ota/")           # it keeps re-checking while waiting
        assert srv.activate_code(code) is not None     # the user types the code in
        assert dev.finish() == 0
        log = dev.log()
        assert "device activated" in log
        assert "run_until: stopping on entering state listen" in log
        assert srv.device(DEV)["activated"]
        assert srv.device(DEV)["activation_version"] == "1"
    finally:
        srv.stop()


def test_v2_hmac_activation_pending_then_accepted(tmp_path, device):
    srv = ota_server.run_in_thread()
    srv.register_hmac_key(SERIAL, bytes.fromhex(KEY_HEX))
    try:
        root = make_root(tmp_path, srv.ota_url, serial=SERIAL, hmac_key=KEY_HEX)
        dev = device(root)
        code = dev.wait_for(CODE_LINE).group(1)
        dev.wait_for(r"activation pending: enter code %s" % code)   # 202 while not entered
        rec = srv.device(DEV)
        assert rec["hmac_verified"] and not rec["activated"] and rec["serial"] == SERIAL
        srv.activate_code(code)
        dev.wait_for(r"activation accepted \(v2, HMAC verified\)")
        assert dev.finish() == 0
        assert "device activated" in dev.log()
        posts = [r for r in srv.requests if r["endpoint"] == "activate"]
        body = posts[-1]["json"]
        assert body["algorithm"] == "hmac-sha256" and body["serial_number"] == SERIAL
        assert body["challenge"] == rec["challenge"]
        assert posts[-1]["status"] == 200 and any(p["status"] == 202 for p in posts)
        assert posts[-1]["headers"]["Activation-Version"] == "2"
        assert srv.device(DEV)["activated"]
    finally:
        srv.stop()


def test_v2_wrong_key_backs_off_then_goes_offline(tmp_path, device):
    srv = ota_server.run_in_thread()
    srv.register_hmac_key(SERIAL, bytes.fromhex("22" * 32))   # not the device's key
    try:
        root = make_root(tmp_path, srv.ota_url, serial=SERIAL, hmac_key=KEY_HEX)
        dev = device(root, run_until="offline")
        assert dev.finish() == 0
        log = dev.log()
        assert "activation failed (1/3): activation HTTP 401: HMAC verification failed; retry in" in log
        assert "activation failed (2/3)" in log
        assert "stopping on entering state offline" in log
        assert not srv.device(DEV)["activated"]
    finally:
        srv.stop()


def test_expired_v1_code_is_replaced_on_screen(tmp_path, device):
    srv = ota_server.run_in_thread(code_ttl=1.0)
    try:
        root = make_root(tmp_path, srv.ota_url)
        dev = device(root)
        first = dev.wait_for(CODE_LINE).group(1)
        dev.wait_for(r"new activation code")
        second = dev.wait_for(CODE_LINE).group(1)
        assert second != first
        assert srv.activate_code(first) is None        # the old code is gone
        assert srv.activate_code(second) is not None
        assert dev.finish() == 0 and "device activated" in dev.log()
    finally:
        srv.stop()


def test_v2_expired_challenge_fetches_a_new_one(tmp_path, device):
    srv = ota_server.run_in_thread(code_ttl=1.0)
    srv.register_hmac_key(SERIAL, bytes.fromhex(KEY_HEX))
    try:
        root = make_root(tmp_path, srv.ota_url, serial=SERIAL, hmac_key=KEY_HEX)
        dev = device(root)
        first = dev.wait_for(CODE_LINE).group(1)
        dev.wait_for(r"activation refused: activation HTTP 400: Unknown or expired challenge")
        second = dev.wait_for(CODE_LINE).group(1)
        assert second != first
        srv.activate_code(second)
        dev.wait_for(r"activation accepted")
        assert dev.finish() == 0
    finally:
        srv.stop()


def test_serial_without_hmac_key_falls_back_to_showing_the_code(tmp_path, device):
    srv = ota_server.run_in_thread()
    try:
        root = make_root(tmp_path, srv.ota_url, serial=SERIAL, hmac_key=None)
        dev = device(root)
        dev.wait_for(CODE_LINE)
        dev.wait_for(r"cannot compute the activation HMAC")
        dev.wait_for(r"POST .*/xiaozhi/ota/ ")           # still re-checking, no crash
        assert dev.proc.poll() is None
    finally:
        srv.stop()
