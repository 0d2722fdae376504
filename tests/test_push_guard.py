"""Pushes across reboots (firmware/push_guard.py): handled tokens survive a reboot, older
versions need force, a retained push is suspect, a refused image is not fetched again, a push
during an update is answered "busy", signMethod SHA256 is verified. The agent alone under the
real micropython binary, then the whole device against real brokers (amqtt, mosquitto)."""
import hashlib
import json
import time

import pytest

import build_image
import push
from conftest import mpy_json
from mqtt_helpers import (DEV, FAIL_STEPS, REBOOT, Device, amqtt, broker,  # noqa: F401
                          firmware_requests, ota, platforms, product, steps, wait_log)
from test_ithings_ota import PRELUDE
from test_mqtt_ota import UMQTT_VERSIONS, _umqtt_dir


def run(code):
    return mpy_json(PRELUDE + code)


def test_tokens_survive_a_reboot_and_older_versions_need_force():
    got = run(r"""
out = []
a, s, ctx = agent("1.3.0")
data = ctx.board.settings.data
a.handle(DOWN, push("1.4.0", token="old"))           # handled (admitted), then "reboot"
a2, s2, _ = agent("1.3.0", data)
a2.handle(DOWN, push("1.4.0", token="old"))           # the broker hands it over again
out.append([a2.due_push(), brief(s2.out)])
a2.handle(DOWN, push("1.2.0", token="t2"))            # older, not forced: -4
a2.handle(DOWN, push("1.2.0", token="t3", force=1))   # older, forced: admitted
p = a2.due_push()
out.append([brief(s2.out), s2.out[0][1]["params"]["desc"], p.token])
s3 = Session()
s3.retained = True                                    # as the broker stored it
a3 = ithings_ota.Agent(ctx, a2.cfg, s3)
a3.handle(DOWN, push("1.2.0", token="t4", force=1))  # retained: its force is not enough
a3.handle(DOWN, push("1.5.0", token="t5"))            # retained but newer: admitted
out.append([s3.out[0][1]["params"], a3.due_push().token])
for i in range(12):                                   # the ring keeps the newest 8
    a3._remember("r%d" % i)
out.append(data["mqtt_ota_seen"])
a4, s4, ctx4 = agent("1.3.0", None, allow_downgrade=True)
a4.handle(DOWN, push("1.2.0", token="t6"))            # the config allows downgrades
out.append(a4.due_push().token)
print(json.dumps(out))
""")
    assert got[0] == [None, []]                            # ignored: no download, no report
    assert got[1][0] == [["$ota/up/progress", "progress", -4, 1, "send"]]
    assert got[1][1] == "version 1.2.0 is older than running 1.3.0 (not forced)"
    assert got[1][2] == "t3"
    assert got[2][0]["step"] == -4 and got[2][0]["desc"].startswith("retained push for 1.2.0")
    assert got[2][1] == "t5"
    assert got[3] == ["r%d" % i for i in range(4, 12)]
    assert got[4] == "t6"


def test_a_refused_image_is_not_fetched_again_for_a_new_token():
    got = run(r"""
a, s, ctx = agent()
a.handle(DOWN, push(token="a"))
p = a.due_push()
a.begin(p)
a.failed(p, -2, "image digest does not verify")
s.out = []
a.handle(DOWN, push(token="b"))                       # the same image under a new token
refused = [a.due_push(), brief(s.out)[0], s.out[0][1]["params"]["desc"]]
a.handle(DOWN, push(token="c", force=1))              # forced: tried again
a.handle(DOWN, push(token="d", fileMd5="cd" * 16))    # another image: tried at once
print(json.dumps([refused, a.due_push().token]))
""")
    refused, forced = got
    assert refused[0] is None and refused[1][2] == -2
    assert refused[2].startswith("firmware 1.1.0 was refused (image digest does not verify)")
    assert forced == "c"


def _retained_push(plat, version, image, host, token):
    name = "fw-%s.bin" % version
    _, url = host.add(name, image)
    msg = push.upgrade_message(version, url, len(image), hashlib.md5(image).hexdigest(),
                               token=token, name=name)
    topic = push.topics(plat.product_id, DEV)["ota_down"]
    plat.client.publish(topic, json.dumps(msg), qos=1, retain=True).wait_for_publish(10)
    return topic


def test_retained_push_then_newer_push_then_reboots_stay_on_the_newer(broker, ota, product,
                                                                       platforms, tmp_path):
    dev = Device(tmp_path, broker, product, ota)
    plat = platforms(broker, product)
    host = push.ImageHost(server=ota)
    topic = None
    try:
        first = dev.boot(30000)
        assert plat.wait_report(DEV, "1.0.0", timeout=15), Device.read(first)
        topic = _retained_push(plat, "1.2.0", build_image.build_image("1.2.0", size=100000),
                               host, "retained-120")
        rc, log1 = dev.finish(first)
        assert rc == REBOOT and "installed 1.2.0" in log1, log1
        second = dev.boot(30000)                       # 1.2.0 boots; the broker re-sends it
        assert plat.wait_step(DEV, [100], "retained-120", timeout=15), Device.read(second)
        token = plat.push_image(DEV, "1.3.0", build_image.build_image("1.3.0", size=100000), host)
        rc, log2 = dev.finish(second)
        assert rc == REBOOT and "installed 1.3.0" in log2, log2
        rc, log3 = dev.run(4000)                       # 1.3.0 boots and is confirmed
        assert "boot 1.3.0 state pending-verify" in log3 and rc != REBOOT, log3
        assert plat.wait_step(DEV, [100], token, timeout=5), log3
        t0 = time.time()
        logs = []
        for _ in range(2):                             # power cycles: the retained push again
            rc, log = dev.run(2500)
            assert "boot 1.3.0 state valid" in log and rc != REBOOT, log
            logs.append(log)
        for log in [log2] + logs:                      # the retain flag was read, and heeded
            assert "ignored retained push retained-120: already handled" in log, log
        assert firmware_requests(ota, t0) == []
        assert steps(plat, DEV, "retained-120").count(100) == 1   # never 1 -> 99 -> 100 again
    finally:
        if topic:
            plat.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)


def test_sign_method_sha256_is_verified(amqtt, ota, product, platforms, tmp_path):  # noqa: F811
    dev = Device(tmp_path, amqtt, product, ota)
    plat = platforms(amqtt, product)
    host = push.ImageHost(server=ota)
    image = build_image.build_image("1.1.0", size=100000)
    _, url = host.add("sha.bin", image)
    proc = dev.boot(30000)
    assert plat.wait_report(DEV, "1.0.0", timeout=15), Device.read(proc)
    bad = plat.push(DEV, "1.1.0", url, len(image), hashlib.sha256(b"other").hexdigest(),
                    sign_method="SHA256", name="sha.bin")
    got = plat.wait_step(DEV, FAIL_STEPS, bad, timeout=15)
    assert got and got["step"] == -2 and got["desc"] == "sha256 mismatch", Device.read(proc)
    good = plat.push(DEV, "1.1.0", url, len(image), hashlib.sha256(image).hexdigest(),
                     sign_method="SHA256", name="sha.bin")
    rc, log = dev.finish(proc)
    assert rc == REBOOT and "installed 1.1.0" in log, log
    assert not set(steps(plat, DEV, good)) & set(FAIL_STEPS)


@pytest.mark.parametrize("umqtt", UMQTT_VERSIONS)
def test_the_retain_flag_is_read_with_every_umqtt_version(amqtt, ota, product, platforms,  # noqa: F811
                                                          tmp_path, umqtt):
    """lib/'s 1.3.4 and the versions boards freeze: none hands the flag to its callback, the
    session reads it. A retained, forced downgrade is refused; the same push live installs."""
    dev = Device(tmp_path, amqtt, product, ota, umqtt_dir=_umqtt_dir(umqtt))
    plat = platforms(amqtt, product)
    host = push.ImageHost(server=ota)
    image = build_image.build_image("0.9.0", size=60000)
    name = "fw-0.9.0.bin"
    _, url = host.add(name, image)
    msg = push.upgrade_message("0.9.0", url, len(image), hashlib.md5(image).hexdigest(),
                               token="kept", name=name, force=1)
    topic = push.topics(plat.product_id, DEV)["ota_down"]
    plat.client.publish(topic, json.dumps(msg), qos=1, retain=True).wait_for_publish(10)
    try:
        proc = dev.boot(20000)
        got = plat.wait_step(DEV, FAIL_STEPS, "kept", timeout=15)
        assert got and got["step"] == -4, Device.read(proc)
        assert got["desc"] == "retained push for 0.9.0 is older than running 1.0.0"
        live = plat.push(DEV, "0.9.0", url, len(image), hashlib.md5(image).hexdigest(),
                         name=name, force=1)
        rc, log = dev.finish(proc)
        assert rc == REBOOT and "installed 0.9.0" in log, log
        assert not set(steps(plat, DEV, live)) & set(FAIL_STEPS)
    finally:
        plat.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
