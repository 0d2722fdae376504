"""Upgrade pushes over MQTT (firmware/mqtt_ota.py) end to end: the firmware on the MicroPython
unix port against a real broker (amqtt via tools/mqtt_broker.py, and mosquitto when installed),
the local OTA server serving pre-signed downloads, and tools/push.py playing the iThings
platform. Resilience (broker restarts, missed pings, duplicates): test_mqtt_resilience.py.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import broker as brokers
import build_image
import push
from conftest import MICROPYTHON, ROOT, mpy_env, mpy_json, run_mpy
from mqtt_helpers import (DEV, DRIVER, FAIL_STEPS, FROZEN_UMQTT, REBOOT, Device,  # noqa: F401
                          amqtt, blank, broker, firmware_requests, ota, platforms, product,
                          push_file, steps, umqtt_env, wait_log)
from signing import fleet_key  # noqa: F401


# ---- full update ---------------------------------------------------------------------------------

FORMS = [("amqtt", "single"), ("amqtt", "seed"), ("mosquitto", "multi"), ("mosquitto", "seed")]


@pytest.mark.parametrize("kind,form", FORMS, ids=["-".join(f) for f in FORMS])
def test_push_download_reboot_report_confirm(kind, form, ota, product, platforms, tmp_path,
                                            fleet_key):
    # signing on: the device trusts the fleet key, every push shape carries a signed image
    with brokers.Broker(kind) as b:
        dev = Device(tmp_path, b, product, ota, update=fleet_key.update_config())
        plat = platforms(b, product)
        image = fleet_key.sign(build_image.build_image("1.1.0", size=200000))
        first = dev.boot(30000)
        assert plat.wait_report(DEV, "1.0.0", timeout=15), Device.read(first)
        t_push = time.time()
        token = plat.push_image(DEV, "1.1.0", image, push.ImageHost(server=ota), form)
        rc, log1 = dev.finish(first)
        assert rc == REBOOT, log1
        assert "installed 1.1.0 in ota_1" in log1
        assert "signature verified (block 0, key %s)" % fleet_key.digest in log1
        assert dev.settings()["mqtt_ota_pending"] == {"pending_version": "1.1.0", "token": token,
                                                      "from_version": "1.0.0", "stage": "reboot"}
        # The download used the pre-signed URL verbatim (relative in the seed form).
        req = firmware_requests(ota, t_push)
        assert len(req) == 1 and req[0]["status"] == 200
        assert "X-Amz-Signature=" in req[0]["raw_path"] and "%2F" in req[0]["raw_path"]
        # Boot the new image: it reports 1.1.0, gets reportInfoReply 200, confirms, reports 100.
        rc, log2 = dev.run(3000)
        assert "boot 1.1.0 state pending-verify" in log2
        assert plat.wait_step(DEV, [100], token, timeout=5), log2
        assert "image marked valid" in log2 and "update to 1.1.0 confirmed" in log2
        assert "connection lost" not in log1 + log2
        s = steps(plat, DEV, token)
        assert s[0] == 1 and s[-1] == 100 and 99 in s
        assert 0 not in s and not set(s) & set(FAIL_STEPS)
        assert s == sorted(s)
        assert "mqtt_ota_pending" not in dev.settings()
        assert dev.settings()["mqtt_ota_last"]["step"] == 100
        # Confirmed: a third power-on keeps 1.1.0 (no rollback).
        rc, log3 = dev.run(0)
        assert "boot 1.1.0 state valid" in log3
        assert [r["version"] for r in plat.reports(DEV)][:2] == ["1.0.0", "1.1.0"]


def test_admission_rejections_never_touch_flash(broker, ota, product, platforms, tmp_path):
    dev = Device(tmp_path, broker, product, ota, allowed_schemes=["https", "http"])
    plat = platforms(broker, product)
    proc = dev.boot(20000)
    assert plat.wait_report(DEV, timeout=15), Device.read(proc)
    t0 = time.time()
    url = ota.url + ota.presign("never-fetched.bin")
    md5 = "0" * 32
    cases = [
        (dict(is_diff=3), -4),
        (dict(sign_method="sha256"), -4),
        (dict(size=0), -4),
        (dict(size=0x300000 + 1), -4),
        (dict(md5="not-an-md5"), -4),
        (dict(url="ftp://127.0.0.1/x.bin"), -1),
        (dict(name="firmware.zip"), -4),
        (dict(module="other-module"), -4),
    ]
    tokens = []
    for over, code in cases:
        args = dict(version="1.1.0", url=url, size=100000, md5=md5)
        args.update({k: v for k, v in over.items() if k in args})
        kw = {k: v for k, v in over.items() if k not in args}
        tok = plat.push(DEV, args["version"], args["url"], args["size"], args["md5"], **kw)
        tokens.append((tok, code))
    # The seed form naming two app images: which one is for this board is unclear (-4).
    dev_tokens = [plat.push(DEV, "1.1.0", "/api/v1/oss/x.bin?X-Amz-Signature=1", 100, md5, "seed",
                            name="x.bin", extra_files=[{"name": "y.bin", "size": 1, "url": "/y",
                                                        "signature": md5}])]
    tokens.append((dev_tokens[0], -4))
    for tok, code in tokens:
        got = plat.wait_step(DEV, FAIL_STEPS, tok, timeout=10)
        assert got and got["step"] == code, (tok, code, got, Device.read(proc))
        assert "://" not in got["desc"] and "Signature" not in got["desc"]
    # A push of the version already running is ignored (DESIGN.md section 3) and answered by a
    # fresh version report; malformed JSON is ignored.
    n_reports = len(plat.reports(DEV))
    plat.publish_raw(DEV, b"{not json")
    same = plat.push(DEV, "1.0.0", url, 100000, md5)
    assert plat.wait(lambda: len(plat.reports(DEV)) > n_reports, timeout=10)
    proc.send_signal(signal.SIGINT)
    rc, log = dev.finish(proc)
    assert plat.progress(DEV, same) == []
    assert "already running 1.0.0" in log and "malformed" in log
    assert "Traceback" not in log
    assert firmware_requests(ota, t0) == []
    assert blank(dev.ota1())
    assert "mqtt_ota_pending" not in dev.settings()


def test_md5_mismatch_reports_minus_2_and_old_image_boots(amqtt, ota, product, platforms, tmp_path):
    dev = Device(tmp_path, amqtt, product, ota)
    plat = platforms(amqtt, product)
    image = build_image.build_image("1.1.0", size=150000)
    _, absolute = push.ImageHost(server=ota).add("md5-%s.bin" % product, image)
    proc = dev.boot(20000)
    assert plat.wait_report(DEV, timeout=15)
    token = plat.push(DEV, "1.1.0", absolute, len(image), hashlib.md5(b"other").hexdigest())
    got = plat.wait_step(DEV, FAIL_STEPS, token, timeout=15)
    assert got and got["step"] == -2 and "md5" in got["desc"], Device.read(proc)
    # Still listening: after the failure it re-reports the version it keeps running.
    assert plat.wait(lambda: len(plat.reports(DEV)) >= 2, timeout=10)
    proc.send_signal(signal.SIGINT)
    rc, log = dev.finish(proc)
    assert "update to 1.1.0 failed (-2): md5 mismatch" in log
    assert dev.ota1()[:4096] == b"\xff" * 4096  # the rejected image can never be booted
    assert "mqtt_ota_pending" not in dev.settings()
    # Power on again: the old image boots, and a correct push then goes through.
    proc = dev.boot(20000)
    assert wait_log(proc, "boot 1.0.0 state"), Device.read(proc)
    assert plat.wait(lambda: len(plat.reports(DEV)) >= 3, timeout=10)
    token2 = push_file(plat, DEV, "1.1.0", absolute, image)
    rc, log = dev.finish(proc)
    assert rc == REBOOT, log
    rc, log = dev.run(3000)
    assert plat.wait_step(DEV, [100], token2, timeout=5), log


def test_unconfirmed_image_rolls_back_and_reports(amqtt, ota, product, platforms, tmp_path):
    """The platform never answers the new version's reportInfo: the image is not confirmed,
    the device reboots (mqtt.confirm_timeout_s), the bootloader rolls back, and the old image
    reports the failure with the push's token."""
    no_reply_for_new = (lambda d, m: (m.get("params") or {}).get("version") != "1.1.0")
    dev = Device(tmp_path, amqtt, product, ota, confirm_timeout_s=2)
    plat = platforms(amqtt, product, answer_report_info=no_reply_for_new)
    image = build_image.build_image("1.1.0", size=100000)
    proc = dev.boot(20000)
    assert plat.wait_report(DEV, timeout=15)
    token = plat.push_image(DEV, "1.1.0", image, push.ImageHost(server=ota), "single")
    rc, log = dev.finish(proc)
    assert rc == REBOOT, log
    rc, log2 = dev.run(10000)                 # the new image: never confirmed
    assert rc == REBOOT and "boot 1.1.0 state pending-verify" in log2, log2
    assert "not confirmed within 2 s" in log2
    rc, log3 = dev.run(3000)                  # the bootloader rolled back
    assert "boot 1.0.0" in log3 and "rollback" in log3, log3
    got = plat.wait_step(DEV, FAIL_STEPS, token, timeout=5)
    assert got and got["step"] == -3 and "rolled back" in got["desc"]
    assert 100 not in steps(plat, DEV, token)
    assert "mqtt_ota_pending" not in dev.settings()


def test_a_power_cut_during_a_pushed_images_first_boot_is_reported_with_its_reason(
        amqtt, ota, product, platforms, tmp_path):
    """The new image never ran (power off before the app): the old image reports -3 and why,
    so the platform knows a retry is worth it; then the same version pushed again installs."""
    from ota_helpers import ota_state
    dev = Device(tmp_path, amqtt, product, ota)
    plat = platforms(amqtt, product)
    image = build_image.build_image("1.1.0", size=100000)
    proc = dev.boot(20000)
    assert plat.wait_report(DEV, timeout=15)
    token = plat.push_image(DEV, "1.1.0", image, push.ImageHost(server=ota), "single")
    rc, log = dev.finish(proc)
    assert rc == REBOOT, log
    assert ota_state(str(tmp_path)) == ["ota_1", "1.1.0", "pending-verify"]  # power on, off
    proc = dev.boot(20000)                    # the bootloader rolled back
    got = plat.wait_step(DEV, FAIL_STEPS, token, timeout=15)
    assert got and got["step"] == -3, Device.read(proc)
    assert got["desc"] == "rolled back to 1.0.0: 1.1.0 never ran (cut at first boot)", got
    token2 = plat.push_image(DEV, "1.1.0", image, push.ImageHost(server=ota), "single")
    rc, log = dev.finish(proc)
    assert rc == REBOOT, log
    rc, log = dev.run(3000)
    assert plat.wait_step(DEV, [100], token2, timeout=5), log


# lib/'s pinned 1.3.4, and what MicroPython v1.24 / v1.25-26 / v1.27-28 freeze into the esp32
# firmware (the copy a board really imports), fetched by tools/fetch_deps.py (lib/lock.json).
UMQTT_VERSIONS = ["1.3.4", "1.4.0", "1.6.0", "1.7.0"]


def _umqtt_dir(version):
    if version == "1.3.4":
        return None
    d = os.path.join(FROZEN_UMQTT, version)
    if not os.path.isfile(os.path.join(d, "umqtt", "simple.py")):
        pytest.skip("umqtt.simple %s not fetched: run tools/fetch_deps.py with MICROPYTHON_LIB "
                    "set to a micropython-lib checkout" % version)
    return d


@pytest.mark.parametrize("umqtt", UMQTT_VERSIONS)
def test_tls_with_ca_verification(broker, ota, product, platforms, tmp_path, umqtt):
    umqtt_dir = _umqtt_dir(umqtt)
    # the version under test is the one the device imports
    where = run_mpy("from firmware import lib_first; print(lib_first.load('umqtt.simple').__file__)",
                    env=None if umqtt_dir is None
                    else {"MICROPYPATH": umqtt_env(umqtt_dir)["MICROPYPATH"]}).stdout
    assert (umqtt_dir or os.path.join(ROOT, "lib")) in where, where
    tls = brokers.make_tls_files(str(tmp_path))
    with brokers.Broker(broker.kind, tls={"cert": tls["cert"], "key": tls["key"]}) as b:
        plat = platforms(b, product)
        root = tmp_path / "dev"
        dev = Device(root, b, product, ota, port=b.tls["port"], tls=True, ca_file=tls["ca"],
                     umqtt_dir=umqtt_dir)
        rc, log = dev.run(2000)
        assert "(TLS)" in log and "connected; subscribed" in log, log
        assert plat.wait_report(DEV, timeout=5)
        assert "reportInfoReply 200" in log
        # A CA that did not sign the broker's certificate: refused, retried, never a crash.
        other = brokers.make_tls_files(str(tmp_path / "dev"))
        dev.config(ca_file=other["ca"])
        n = len(plat.reports(DEV))
        rc, log = dev.run(1500)
        assert rc == 0 and "connected; subscribed" not in log and "failed" in log, log
        assert len(plat.reports(DEV)) == n


def test_push_tool_command_line(amqtt, ota, product, tmp_path, fleet_key):
    """tools/push.py as a user runs it: waits for the device's version report, pushes (seed form,
    image signed with --sign-key and served by a running OTA server through its admin API),
    draws progress, exits 0 on 100."""
    dev = Device(tmp_path, amqtt, product, ota, report_ota_topic=True,
                 update=fleet_key.update_config())
    cmd = [sys.executable, os.path.join(ROOT, "tools", "push.py"), "--broker",
           "%s:%d" % (amqtt.host, amqtt.port), "--product", product, "--device", DEV,
           "--version", "1.2.0", "--size", "120000", "--form", "seed", "--ota-url", ota.url,
           "--wait-report", "--timeout", "40", "--sign-key", str(fleet_key.pem)]
    tool = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        head = [tool.stdout.readline() for _ in range(2)]  # subscribed before the device reports
        assert "waiting for %s to report" % DEV in head[-1], head
        rc, log = dev.run(20000)
        assert rc == REBOOT, log
        assert "signature verified (block 0, key %s)" % fleet_key.digest in log
        assert "reply to report: code 400 (ignored)" in log   # $ota/up/report's error reply
        rc, log = dev.run(3000)
        assert "connection lost" not in log, log  # replies handled outside umqtt's read loops
        out, _ = tool.communicate(timeout=30)
    finally:
        if tool.poll() is None:
            tool.kill()
    out = "".join(head) + out
    assert tool.returncode == 0, out + log
    assert "[" + "#" * 30 + "]  100%" in out and "confirmed the update" in out
    assert "reports version 1.0.0" in out and "reports version 1.2.0" in out


def test_connection_settings(tmp_path):
    res = mpy_json(r"""
import json
from firmware import config as C, mqtt_ota
mac = b"\xd4\x06\x06\xb6\xa9\xfb"
out = []
def s(cfg, over):
    c = C._merge(C.DEFAULTS, {"mqtt": cfg})
    x = mqtt_ota.Settings(c, over, mac)
    out.append([x.host, x.port, x.tls, x.client_id, x.topics.ota_down, x.username, x.password,
                x.keepalive, x.jitter_ms, x.source])
s({"host": "h", "product_id": "P"}, None)
s({"host": "h", "port": 8883, "product_id": "P", "device_name": "dev1", "username": "u",
   "password": "pw", "keepalive": 30, "download_jitter_ms": 0}, None)
s({}, {"endpoint": "mqtt.example.com:8883", "client_id": "X&Y", "username": "u2",
       "password": "p2", "keepalive": 120})
s({"host": "h", "product_id": "P"}, {"endpoint": "broker.local", "client_id": "GID_test@@@abc",
                                     "username": "gw", "password": "gwp"})
s({"host": "h", "tls": True, "product_id": "P"}, None)
try:
    s({"host": "h"}, None)
except ValueError as e:
    out.append(str(e))
print(json.dumps(out))
""")
    assert res[0] == ["h", 1883, False, "P&D40606B6A9FB", "$ota/down/upgrade/P/D40606B6A9FB",
                      None, None, 60, 5000, "config"]
    assert res[1] == ["h", 8883, True, "P&dev1", "$ota/down/upgrade/P/dev1", "u", "pw", 30, 0,
                      "config"]
    # no broker in config.json, an iThings section: the section is the push broker
    assert res[2] == ["mqtt.example.com", 8883, True, "X&Y", "$ota/down/upgrade/X/Y", "u2", "p2",
                      120, 5000, "ota_check"]
    # a broker in config.json and a xiaozhi chat-gateway section: config.json wins, whole
    assert res[3] == ["h", 1883, False, "P&D40606B6A9FB", "$ota/down/upgrade/P/D40606B6A9FB",
                      None, None, 60, 5000, "config"]
    assert res[4][:3] == ["h", 8883, True]          # TLS without a port: the MQTT TLS port
    assert "product_id" in res[5]


def test_listen_without_a_push_channel_feeds_the_watchdog_while_it_idles(tmp_path):
    """The idle hour of an unconfigured push channel is longer than the watchdog's timeout."""
    import mkflash
    mkflash.make_device_root(str(tmp_path), config={"mqtt": {"host": "127.0.0.1"}})
    code = """
import sys
from firmware import watchdog
class W:
    fed = 0
    def feed(self):
        W.fed += 1
watchdog._wdt = W()
sys.argv.append("1000")
exec(open(%r).read())
print("FED", W.fed)
""" % DRIVER
    proc = subprocess.run([MICROPYTHON, "-c", code], cwd=str(tmp_path), env=mpy_env(),
                          capture_output=True, text=True, timeout=30)
    assert "listen -> not configured" in proc.stdout, proc.stdout + proc.stderr
    fed = int(proc.stdout.split("FED ")[1].split()[0])
    assert fed >= 2, proc.stdout


def test_listen_without_product_id_idles_and_says_why(tmp_path):
    import mkflash
    mkflash.make_device_root(str(tmp_path), config={"mqtt": {"host": "127.0.0.1"}})
    t0 = time.time()
    proc = subprocess.run([MICROPYTHON, DRIVER, "600"], cwd=str(tmp_path), env=mpy_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MQTT upgrade pushes off: mqtt product_id not configured" in proc.stdout
    assert "listen -> not configured" in proc.stdout
    assert time.time() - t0 >= 0.6


def _app_push_and_reboot(tmp_path, plat, srv, image=None):
    """Boot main.py, push 1.1.0 once it reports 1.0.0, let it reboot and boot it again until the
    platform sees 100 or a failure. (first boot's log, second boot's log, final progress)."""
    boot = [MICROPYTHON, os.path.join(ROOT, "main.py")]
    first = subprocess.Popen(boot, cwd=str(tmp_path), env=mpy_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    assert plat.wait_report(DEV, "1.0.0", timeout=20)
    token = plat.push_image(DEV, "1.1.0", image or build_image.build_image("1.1.0"),
                            push.ImageHost(server=srv), "seed")
    out1, _ = first.communicate(timeout=30)
    assert first.returncode == REBOOT, out1
    second = subprocess.Popen(boot, cwd=str(tmp_path), env=mpy_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    got = plat.wait_step(DEV, [100] + list(FAIL_STEPS), token, timeout=20)
    second.kill()
    out2, _ = second.communicate(timeout=10)
    assert got and got["step"] == 100, out2
    assert "firmware 1.1.0 in ota_1 (pending-verify)" in out2
    return out1, out2


def test_whole_app_push_to_confirm(amqtt, product, platforms, tmp_path, fleet_key):
    """main.py (the app's state machine: check -> activate -> listen) with the default
    confirm_by "ota_check" and signing on: a push of a signed image installs, the new image is
    confirmed by the OTA check, and the platform gets 100 once reportInfoReply arrives."""
    import mkflash
    import ota_server
    srv = ota_server.run_in_thread(auto_activate_s=0)
    try:
        mkflash.make_device_root(str(tmp_path), config={
            "ota_url": srv.ota_url, "recheck_interval_s": 30,
            "retry": {"base_s": 0.2, "tries": 3}, "activation": {"recheck_s": 0.3, "poll_s": 0.2},
            "mqtt": {"host": amqtt.host, "port": amqtt.port, "product_id": product,
                     "download_jitter_ms": 0, "http_base": srv.url},
            "update": fleet_key.update_config()})
        image = fleet_key.sign(build_image.build_image("1.1.0"))
        out1, out2 = _app_push_and_reboot(tmp_path, platforms(amqtt, product), srv, image)
        assert "signature policy: signatures required; 1 trusted key(s)" in out1
        assert "signature verified (block 0, key %s)" % fleet_key.digest in out1
        assert "image confirmed (first successful OTA check)" in out2
    finally:
        srv.stop()


def test_mqtt_only_device_without_ota_url_updates_and_confirms(amqtt, product, platforms, tmp_path):
    """A fleet on the iThings platform alone: no ota_url, so no OTA check; the device listens on
    MQTT, installs a push, and the platform's reportInfoReply confirms the new image."""
    import mkflash
    import ota_server
    srv = ota_server.run_in_thread()
    try:
        mkflash.make_device_root(str(tmp_path), config={
            "recheck_interval_s": 30,
            "mqtt": {"host": amqtt.host, "port": amqtt.port, "product_id": product,
                     "download_jitter_ms": 0, "http_base": srv.url}})
        out1, out2 = _app_push_and_reboot(tmp_path, platforms(amqtt, product), srv)
        assert "MQTT only" in out1
        assert [r["endpoint"] for r in srv.requests] == ["firmware"]  # no OTA check, only the image
        assert "image confirmed (reportInfoReply 200)" in out2
    finally:
        srv.stop()


def test_a_configured_broker_wins_over_the_servers_chat_gateway(broker, product, platforms,
                                                               tmp_path):
    """xiaozhi-esp32-server answers with its voice-chat gateway in `mqtt`: the device still
    connects to the broker config.json names (the platform sees its version report) and keeps
    the gateway section as the chat settings."""
    import mkflash
    import ota_server
    from conftest import free_port
    gw_port = free_port()
    gateway = {"endpoint": "127.0.0.1:%d" % gw_port,
               "client_id": "GID_esp-box-3@@@{mac}@@@{client_id}", "username": "gw",
               "password": "gw-secret", "publish_topic": "device-server",
               "subscribe_topic": "devices/p2p/{mac}"}
    srv = ota_server.run_in_thread(auto_activate_s=0, mqtt=gateway)
    mkflash.make_device_root(str(tmp_path), config={
        "ota_url": srv.ota_url, "recheck_interval_s": 30,
        "mqtt": {"host": broker.host, "port": broker.port, "product_id": product}})
    plat = platforms(broker, product)
    proc = subprocess.Popen([MICROPYTHON, os.path.join(ROOT, "main.py")], cwd=str(tmp_path),
                            env=mpy_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        reported = plat.wait_report(DEV, "1.0.0", timeout=20)
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        srv.stop()
    assert reported, out
    assert "connecting to %s:%d as %s&%s" % (broker.host, broker.port, product, DEV) in out
    tried = [line for line in out.splitlines() if "connecting to" in line or "connect to" in line]
    assert tried and all("%s:%d" % (broker.host, broker.port) in line for line in tried), tried
    with open(os.path.join(str(tmp_path), "settings.json")) as f:
        stored = json.load(f)["mqtt"]
    assert stored["endpoint"] == gateway["endpoint"] and stored["username"] == "gw"
    assert stored["client_id"].startswith("GID_esp-box-3@@@d40606b6a9fb@@@")


def test_ota_server_down_keeps_the_device_listening_on_mqtt(amqtt, product, platforms, tmp_path):
    """The OTA check gives up (server unreachable) but the broker is fine: the device listens on
    MQTT instead of waiting offline, so the platform still sees it and can push to it."""
    import mkflash
    from conftest import free_port
    mkflash.make_device_root(str(tmp_path), config={
        "ota_url": "http://127.0.0.1:%d/xiaozhi/ota/" % free_port(), "recheck_interval_s": 30,
        "retry": {"base_s": 0.05, "tries": 2},
        "mqtt": {"host": amqtt.host, "port": amqtt.port, "product_id": product, "download_jitter_ms": 0}})
    plat = platforms(amqtt, product)
    proc = subprocess.Popen([MICROPYTHON, os.path.join(ROOT, "main.py")], cwd=str(tmp_path), env=mpy_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert plat.wait_report(DEV, "1.0.0", timeout=20)
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    assert "OTA check failed (2/2)" in out
    assert "listening on MQTT until the next check" in out


def test_push_tool_says_when_the_broker_is_unreachable():
    from conftest import free_port
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "push.py"), "--broker",
                           "127.0.0.1:%d" % free_port(), "--product", "P", "--device", "D", "--version", "1.2.0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cannot reach the broker" in proc.stderr and "Traceback" not in proc.stderr
