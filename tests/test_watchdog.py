"""The watchdog: the simulated machine.WDT (firmware/board/sim_watchdog.py) really fires during a
hang no timeout covers, resets the board through its reboot path, and the simulated bootloader
then rolls back an unconfirmed image; the config's timeout rules (firmware/watchdog.py)."""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

import build_image
import ota_server
import push
from conftest import MICROPYTHON, ROOT, mpy_env, mpy_json, run_mpy
from mqtt_helpers import DEV, REBOOT, mosquitto, platforms, product  # noqa: F401 -- fixtures
from ota_helpers import install_pending_image, make_root, ota_state


# A socket server that accepts and never sends: with the socket timeout patched out, the
# device's read of the answer's status line blocks for ever.
class SilentServer:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)

    def stop(self):
        self.done.set()
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


# main.py, with http_client's socket.settimeout made a no-op: a hang no socket timeout covers.
HANGING_MAIN = """
import socket as _socket
from firmware import http_client

class _Sock:
    def __init__(self, *args):
        self._s = _socket.socket(*args)
    def settimeout(self, t):
        pass
    def __getattr__(self, name):
        return getattr(self._s, name)

class _SocketModule:
    SOCK_STREAM = _socket.SOCK_STREAM
    getaddrinfo = _socket.getaddrinfo
    socket = _Sock

http_client.socket = _SocketModule
from firmware import app
app.main()
"""

HANG_CONFIG = {"watchdog_s": 3, "http_timeout_ms": 1500, "http_deadline_s": 2}


@pytest.fixture
def silent():
    s = SilentServer()
    yield s
    s.stop()


def _hang(root):
    t0 = time.time()
    proc = run_mpy(HANGING_MAIN, cwd=root, timeout=40, check=False)
    return proc, time.time() - t0


def test_a_hang_resets_the_board_and_an_unconfirmed_image_rolls_back(tmp_path, silent):
    root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % silent.port, **HANG_CONFIG)
    install_pending_image(root, "1.1.0")
    proc, took = _hang(root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out                        # reset, as board.reboot() does
    assert "firmware 1.1.0 in ota_1 (pending-verify)" in out
    assert "watchdog on: reset when not fed for 3 s" in out
    assert "POST " in out and "watchdog: not fed for" in out and "I sim: reboot" in out
    assert 3 <= took < 15, took
    assert silent.conns                                     # it really was stuck on our server
    assert ota_state(root)[:2] == ["ota_0", "1.0.0"]        # the bootloader rolled it back


def test_a_hang_resets_the_board_and_a_confirmed_image_comes_back_up(tmp_path, silent):
    root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % silent.port, **HANG_CONFIG)
    install_pending_image(root, "1.1.0")
    run_mpy("from firmware.board import sim\nsim.Board({}).Partition.mark_app_valid_cancel_rollback()",
            cwd=root)
    proc, took = _hang(root)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "watchdog: not fed for" in proc.stdout
    assert ota_state(root) == ["ota_1", "1.1.0", "valid"]


SIM = """
import json, socket, time
from firmware.board import sim
b = sim.Board({})
"""


def _blocking_accept():
    return """
s = socket.socket()
s.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
s.listen(1)
t0 = time.ticks_ms()
try:
    s.accept()                       # blocks for ever: no timeout
except KeyboardInterrupt:
    print("interrupted after", time.ticks_diff(time.ticks_ms(), t0), "bitten", w.bitten)
    b.reboot()
"""


def test_sim_watchdog_interrupts_a_blocking_call_and_reboots(sim_root):
    proc = run_mpy(SIM + "w = b.watchdog(400)\n" + _blocking_accept(), cwd=sim_root, timeout=20,
                   check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "E sim: watchdog: not fed for" in proc.stdout
    line = [x for x in proc.stdout.splitlines() if x.startswith("interrupted after")][0]
    assert line.endswith("bitten True")
    assert 400 <= int(line.split()[2]) < 3000


def test_sim_watchdog_fed_in_time_never_fires(sim_root):
    out = mpy_json(SIM + """
w = b.watchdog(300)
for _ in range(15):
    time.sleep_ms(100)
    w.feed()
w.stop()
print(json.dumps(w.bitten))
""", cwd=sim_root, timeout=20)
    assert out is False


def test_sim_watchdog_api_follows_machine_wdt_c(sim_root):
    # ports/esp32/machine_wdt.c: timeout <= 0 -> ValueError; a second WDT() reconfigures the one
    # watchdog and returns it (esp_task_wdt_reconfigure, esp_task_wdt_add_user only once).
    out = mpy_json(SIM + """
res = []
for bad in (0, -5):
    try:
        b.watchdog(bad)
        res.append("accepted")
    except ValueError as e:
        res.append(str(e))
w1 = b.watchdog(5000)
w2 = b.watchdog(700)
res += [w1 is w2, w2.timeout_ms, hasattr(w1, "deinit")]
w1.stop()
print(json.dumps(res))
""", cwd=sim_root, timeout=20)
    assert out == ["WDT timeout too short", "WDT timeout too short", True, 700, False]


def test_sim_watchdog_kills_a_process_that_swallows_the_interrupt(sim_root):
    code = SIM + """
w = b.watchdog(300)
while True:
    try:
        time.sleep_ms(10000)
    except KeyboardInterrupt:
        print("swallowed")
"""
    proc = run_mpy(code, cwd=sim_root, timeout=20, check=False)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert "swallowed" in proc.stdout and "killing the process" in proc.stdout


def test_timeout_config_rules():
    out = mpy_json("""
import json
from firmware import watchdog as w
print(json.dumps([w.timeout_ms({}), w.timeout_ms({"watchdog_s": 0}), w.timeout_ms({"watchdog_s": 2.5}),
                  w.timeout_ms({"watchdog_s": 5, "http_timeout_ms": 10000}),
                  w.timeout_ms({"watchdog_s": 40, "http_deadline_s": 30}),
                  w.timeout_ms({"watchdog_s": 20, "http_deadline_s": 30}),
                  w.timeout_ms({"watchdog_s": "x"}), w.timeout_ms({"watchdog_s": None})]))
""")
    assert out == [120000, 0, 2500, 20000, 40000, 60000, 120000, 120000]


def test_an_unconfigured_device_starts_no_watchdog(tmp_path):
    # It stops at the REPL for the user to configure it: a watchdog there would reset it.
    root = make_root(tmp_path, None)
    proc = run_mpy(script=os.path.join(ROOT, "main.py"), cwd=root, timeout=30)
    assert "no ota_url in config.json" in proc.stdout and "watchdog on" not in proc.stdout


def test_soak_an_idle_listen_of_10_keepalives_and_a_4mib_update_never_trip_the_watchdog(
        mosquitto, product, platforms, tmp_path):
    # A 3 s watchdog and a 1 s keepalive (mosquitto drops a client silent for 1.5 s): the
    # listener's loop feeds and pings while idle for 10 keepalive periods, and the download's
    # tick (update/pace.py) while a 4 MiB push installs; only the update reboots the board.
    import bench  # its partition table has an ota_1 that a 4 MiB image fits
    srv = ota_server.run_in_thread()
    try:
        root = bench.make_root(str(tmp_path))
        with open(os.path.join(root, "config.json"), "w") as f:
            json.dump(dict(HANG_CONFIG, **{
                "recheck_interval_s": 120,
                "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "product_id": product,
                         "keepalive": 1, "download_jitter_ms": 0, "http_base": srv.url}}), f)
        plat = platforms(mosquitto, product)
        proc = subprocess.Popen([MICROPYTHON, os.path.join(ROOT, "main.py")], cwd=root,
                                env=mpy_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            assert plat.wait_report(DEV, "1.0.0", timeout=20)
            time.sleep(10)                                  # idle: 10 keepalive periods
            assert proc.poll() is None
            plat.push_image(DEV, "1.1.0", build_image.build_image("1.1.0", size=4 * 1024 * 1024),
                            push.ImageHost(server=srv), "seed")
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    finally:
        srv.stop()
    assert proc.returncode == REBOOT, out
    assert "watchdog on: reset when not fed for 3 s" in out
    assert "installed 1.1.0 in ota_1; rebooting" in out and "watchdog: not fed" not in out
    assert "connection lost" not in out and out.count("connected; subscribed") == 1, out
