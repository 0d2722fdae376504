"""Shared pieces of the MQTT upgrade-push tests: brokers, the OTA server, the platform stand-in
(tools/push.py), simulated devices booted as micropython processes, and a throttled file server.

A device "boot" is one micropython process running tests/mqtt_device.py in its device root; a
reboot is its exit code 3, after which the test boots it again (as tools/run_sim.py does).
"""
import hashlib
import json
import os
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import broker as brokers
import mkflash
import ota_server
import push
from conftest import MICROPYTHON, ROOT, mpy_env

DRIVER = os.path.join(ROOT, "tests", "mqtt_device.py")
MAC = "D4:06:06:B6:A9:FB"
DEV = "D40606B6A9FB"
REBOOT = 3
FAIL_STEPS = (-1, -2, -3, -4)


# ---- infrastructure ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=brokers.KINDS)
def broker(request):
    b = brokers.Broker(request.param).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def amqtt():
    b = brokers.Broker("amqtt").start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def ota():
    srv = ota_server.run_in_thread()
    yield srv
    srv.stop()


@pytest.fixture
def product():
    return "P" + secrets.token_hex(4)  # tests share a broker: one product each


class Platform(push.Platform):
    def __init__(self, b, product, **kw):
        super().__init__(b.host, b.port, product, **kw)


@pytest.fixture
def platforms():
    made = []

    def make(b, product, **kw):
        p = Platform(b, product, **kw).start()
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


FROZEN_UMQTT = os.path.join(ROOT, "build", "frozen-umqtt")


def umqtt_env(umqtt_dir=None):
    """The device's environment; with umqtt_dir, that umqtt.simple is imported instead of lib/'s."""
    if not umqtt_dir:
        return mpy_env()
    env = mpy_env()
    env["MICROPYPATH"] = ":".join([ROOT, umqtt_dir] + env["MICROPYPATH"].split(":")[1:])
    return env


class Device:
    """A simulated board (device root) booted as micropython processes."""

    def __init__(self, root, broker, product, ota, mac=MAC, umqtt_dir=None, **mqtt):
        self.root = str(root)
        self.boots = 0
        self.umqtt_dir = umqtt_dir  # another umqtt.simple ahead of lib/ (a board's frozen one)
        cfg = {"mqtt": {"host": broker.host, "port": broker.port, "product_id": product,
                        "download_jitter_ms": 0, "keepalive": 30,
                        "http_base": ota.url if ota is not None else None},
               "confirm_by": "mqtt", "log_level": "info"}
        cfg["mqtt"].update(mqtt)
        mkflash.make_device_root(self.root, config=cfg, mac=mac)
        self.name = mac.replace(":", "").upper()

    def config(self, **mqtt):
        path = os.path.join(self.root, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["mqtt"].update(mqtt)
        with open(path, "w") as f:
            json.dump(cfg, f)

    def boot(self, duration_ms):
        self.boots += 1
        log = open(os.path.join(self.root, "boot-%d.log" % self.boots), "w")
        proc = subprocess.Popen([MICROPYTHON, DRIVER, str(duration_ms)], cwd=self.root,
                                env=umqtt_env(self.umqtt_dir), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        proc.log_path = log.name
        return proc

    def finish(self, proc, timeout=60):
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("device did not finish:\n" + self.read(proc))
        return rc, self.read(proc)

    @staticmethod
    def read(proc):
        with open(proc.log_path) as f:
            return f.read()

    def run(self, duration_ms, timeout=60):
        return self.finish(self.boot(duration_ms), timeout)

    def settings(self):
        try:
            with open(os.path.join(self.root, "settings.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def ota1(self):
        row = mkflash.find(mkflash.load_table(), "ota_1")
        with open(os.path.join(self.root, "flash.bin"), "rb") as f:
            f.seek(row[3])
            return f.read(row[4])


def blank(data):
    return data.count(0xFF) == len(data)


def firmware_requests(srv, since=0):
    return [r for r in srv.requests if r["endpoint"] == "firmware" and r["time"] >= since]


class SlowFiles:
    """A throttled file server (absolute fileUrl downloads that take seconds), with a log."""

    def __init__(self, rate):
        self.files = {}
        self.requests = []
        self.rate = rate
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                data = outer.files.get(self.path.split("?")[0])
                outer.requests.append((time.time(), self.path, self.headers.get("Range")))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
                    start = int(rng[6:].split("-")[0])
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                piece = 4096
                try:
                    for off in range(start, len(data), piece):
                        self.wfile.write(data[off:off + piece])
                        time.sleep(piece / outer.rate)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def add(self, name, data):
        self.files["/" + name] = data
        return self.url + "/" + name

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow():
    made = []

    def make(rate):
        s = SlowFiles(rate)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


def steps(platform, dev, token=None):
    return [p["step"] for p in platform.progress(dev, token)]


def push_file(platform, dev, version, url, image, **kw):
    return platform.push(dev, version, url, len(image), hashlib.md5(image).hexdigest(),
                         name="app.bin", **kw)


def wait_log(proc, text, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in Device.read(proc):
            return True
        if proc.poll() is not None:
            return text in Device.read(proc)
        time.sleep(0.05)
    return False
