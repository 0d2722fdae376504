"""Resilience of the MQTT upgrade-push listener (firmware/mqtt_ota.py) on the unix port: a broker
killed mid-download, a broker that stops answering pings, duplicate / busy / foreign pushes.
"""
import hashlib
import json
import os
import signal
import time

import paho.mqtt.client as paho

import build_image
import push
from conftest import ROOT
from mqtt_helpers import (DEV, REBOOT, Device, amqtt, broker, ota, platforms,  # noqa: F401
                          product, push_file, slow, steps, wait_log)


# ---- resilience ----------------------------------------------------------------------------------

def test_broker_restart_mid_download(broker, ota, product, platforms, slow, tmp_path):
    """The broker dies while the image downloads: the device keeps downloading, reconnects
    with backoff, re-subscribes and re-reports, and the update completes and is confirmed."""
    files = slow(25 * 1024)                          # ~8 s: room for a slow broker restart
    image = build_image.build_image("1.1.0", size=200000)
    url = files.add("app.bin", image)
    dev = Device(tmp_path, broker, product, ota, keepalive=5, reconnect_max_ms=2000)
    plat = platforms(broker, product)
    proc = dev.boot(30000)
    assert plat.wait_report(DEV, timeout=15)
    token = push_file(plat, DEV, "1.1.0", url, image)
    assert plat.wait(lambda: any(2 <= s < 99 for s in steps(plat, DEV, token)), timeout=10), \
        Device.read(proc)
    broker.kill()
    time.sleep(0.5)
    broker.start()
    rc, log = dev.finish(proc)
    assert rc == REBOOT, log
    lost = log.index("connection lost")
    assert log.index("update 1.0.0 -> 1.1.0 starts") < lost < log.index("installed 1.1.0")
    assert log.count("connected; subscribed") >= 2, log
    assert log.count("reportInfo version 1.0.0") >= 2   # re-reported after the reconnect
    assert len(files.requests) == 1                      # the download itself was not disturbed
    rc, log2 = dev.run(4000)
    assert plat.wait_step(DEV, [100], token, timeout=10), log2
    # Download progress: whole-percent steps, rising, at most one a second.
    prog = [p for p in plat.progress(DEV, token) if 1 <= p["step"] <= 98]
    assert len(prog) >= 2, prog  # (QoS 0 ones sent while the broker was down are lost)
    for a, b in zip(prog, prog[1:]):
        assert b["step"] > a["step"] and b["time"] - a["time"] >= 0.9, prog


def test_the_platform_tool_reconnects_through_paho(broker, product, platforms):
    """tools/push.py's platform is a paho-mqtt client (tools/mqtt_lite.py is gone): after a
    broker restart paho's own loop reconnects it, it re-subscribes, and it answers again."""
    plat = platforms(broker, product)
    assert isinstance(plat.client, paho.Client)
    assert not os.path.exists(os.path.join(ROOT, "tools", "mqtt_lite.py"))
    broker.kill()
    time.sleep(0.3)
    broker.start()
    t = push.topics(product, "D1")
    replies = []
    dev = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=product + "&D1",
                      protocol=paho.MQTTv311)
    dev.on_message = lambda c, u, m: replies.append(json.loads(m.payload))
    dev.connect(broker.host, broker.port)
    dev.loop_start()
    try:
        dev.subscribe(t["thing_down"], qos=1)
        deadline = time.time() + 15
        while not replies and time.time() < deadline:  # until the platform is back and answers
            dev.publish(t["thing_up"], json.dumps({"method": "reportInfo", "msgToken": "t1",
                                                   "params": {"version": "1.0.0"}}), qos=1)
            time.sleep(0.5)
    finally:
        dev.disconnect()
        dev.loop_stop()
    assert replies and replies[0]["method"] == "reportInfoReply" and replies[0]["code"] == 200
    assert plat.connects >= 2 and plat.reports("D1")


def test_missed_pings_trigger_reconnect(amqtt, ota, product, platforms, tmp_path):
    """A broker that stops answering (SIGSTOP: the socket stays open) is detected by the
    unanswered ping; the device reconnects once the broker is back."""
    dev = Device(tmp_path, amqtt, product, ota, keepalive=2, reconnect_max_ms=1000)
    plat = platforms(amqtt, product)
    proc = dev.boot(12000)
    assert plat.wait_report(DEV, timeout=15)
    amqtt.proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_log(proc, "no answer to ping", timeout=8), Device.read(proc)
    finally:
        amqtt.proc.send_signal(signal.SIGCONT)
    assert plat.wait(lambda: len(plat.reports(DEV)) >= 2, timeout=15), Device.read(proc)
    proc.send_signal(signal.SIGINT)
    rc, log = dev.finish(proc)
    assert log.count("connected; subscribed") >= 2


def test_duplicates_and_foreign_pushes_are_ignored_busy_ones_answered(amqtt, ota, product, platforms, slow,
                                                        tmp_path):
    files = slow(150 * 1024)
    image = build_image.build_image("1.1.0", size=250000)
    url = files.add("app.bin", image)
    dev = Device(tmp_path, amqtt, product, ota)
    plat = platforms(amqtt, product)
    proc = dev.boot(30000)
    assert plat.wait_report(DEV, timeout=15)
    msg = push.upgrade_message("1.1.0", url, len(image), hashlib.md5(image).hexdigest(),
                               name="app.bin")
    token = msg["msgToken"]
    plat.publish_raw(DEV, msg)
    plat.publish_raw(DEV, msg)                                  # QoS 1 redelivery
    assert plat.wait(lambda: steps(plat, DEV, token), timeout=10)
    dup = push_file(plat, DEV, "1.1.0", url, image)             # same version, new token
    other = push_file(plat, DEV, "1.2.0", url, image)           # a different version: busy
    foreign = push_file(plat, "OTHERDEVICE", "1.1.0", url, image)
    rc, log = dev.finish(proc)
    assert rc == REBOOT, log
    assert len(files.requests) == 1, files.requests
    assert "duplicate of the update in progress" in log and "busy updating to 1.1.0" in log
    for t in (dup, foreign):
        assert plat.progress(DEV, t) == [] and plat.progress("OTHERDEVICE", t) == []
    # the other version was not taken, and the platform is told so rather than left waiting
    assert [(p["step"], p["desc"]) for p in plat.progress(DEV, other)] == \
        [(-1, "busy updating to 1.1.0")]
    assert "OTHERDEVICE" not in log
    subs = [line for line in log.splitlines() if "subscribed" in line]
    assert subs and all("+" not in s and "#" not in s for s in subs)
    # After the reboot the same push arrives again (platform retry): ignored, not re-installed.
    proc = dev.boot(4000)
    assert plat.wait_step(DEV, [100], token, timeout=10), Device.read(proc)
    plat.publish_raw(DEV, msg)
    rc, log2 = dev.finish(proc)
    assert rc == 0 and "ignored push %s" % token in log2
    assert len(files.requests) == 1
    assert steps(plat, DEV, token).count(100) == 1


def test_power_loss_mid_download_is_reported_after_boot(amqtt, ota, product, platforms, slow,
                                                        tmp_path):
    """SIGKILL (power loss) while the image downloads, and no saved offer to take up again (as
    firmware before saved_offer.py left it; resuming: test_resume_offer.py): the old image boots
    and the push is reported as failed (-1) with its token, instead of hanging at
    "downloading" forever."""
    files = slow(60 * 1024)
    image = build_image.build_image("1.1.0", size=200000)
    url = files.add("app.bin", image)
    dev = Device(tmp_path, amqtt, product, ota)
    plat = platforms(amqtt, product)
    proc = dev.boot(20000)
    assert plat.wait_report(DEV, timeout=15)
    token = push_file(plat, DEV, "1.1.0", url, image)
    assert plat.wait(lambda: any(s >= 2 for s in steps(plat, DEV, token)), timeout=10)
    proc.kill()
    proc.wait()
    s = dev.settings()
    assert s["mqtt_ota_pending"]["stage"] == "download"
    del s["ota_offer"]
    with open(os.path.join(dev.root, "settings.json"), "w") as f:
        json.dump(s, f)
    rc, log = dev.run(2500)
    assert "boot 1.0.0" in log, log
    got = plat.wait_step(DEV, [-1, -2, -3, -4], token, timeout=5)
    assert got and got["step"] == -1 and "reset" in got["desc"], log
    assert "mqtt_ota_pending" not in dev.settings()
