"""The confirm deadline (firmware/confirm_deadline.py): a new image still pending verification
confirm_timeout_s after its boot reboots into the rollback, in any state, and the next boot says
why -- in its log, and to the platform as the push's -3 report."""
import json
import time

import pytest

import build_image
import push
from conftest import mpy_json, run_mpy
from http_fault_server import Reply, start
from mqtt_helpers import (DEV, FAIL_STEPS, REBOOT, Device, amqtt, ota, platforms,  # noqa: F401
                          product, steps)
from ota_helpers import boot, install_pending_image, make_root, ota_state


@pytest.fixture
def failing():
    port, stop = start(lambda req: Reply(500, b"down"))
    yield "http://127.0.0.1:%d/xiaozhi/ota/" % port, stop.requests
    stop()


def test_a_check_that_keeps_failing_reboots_into_the_rollback_at_the_deadline(tmp_path, failing):
    url, requests = failing
    # Backoffs that would keep the new image pending for minutes, and a 2 s deadline.
    root = make_root(tmp_path, url, confirm_timeout_s=2,
                     retry={"base_s": 0.5, "factor": 1, "max_s": 0.5, "tries": 1000, "jitter": 0})
    # (a sim.Board() is a power-on: the record goes in before the image is set to boot)
    run_mpy("from firmware.board import sim\nsim.Board({}).settings.set('ota_last_install', "
            "{'version': '1.1.0', 'url': 'http://x/fw.bin', 'tries': 1, 'health': False})", cwd=root)
    install_pending_image(root, "1.1.0")
    t0 = time.time()
    proc = boot(root, timeout=30)
    took = time.time() - t0
    out = proc.stdout
    assert proc.returncode == REBOOT, out + proc.stderr
    assert "it must be confirmed within 2 s" in out
    assert "new image not confirmed within 2 s; rebooting to roll back" in out
    assert 2 <= took < 10 and len(requests) >= 2, (took, len(requests))
    assert ota_state(root)[:2] == ["ota_0", "1.0.0"]
    after = boot(root, run_until="wifi")
    assert "firmware 1.1.0 rolled back: not confirmed within 2 s (-3)" in after.stdout


def test_the_platform_never_replies_rollback_and_a_minus_3_with_the_reason(amqtt, ota, product,
                                                                           platforms, tmp_path):
    no_reply_for_new = (lambda d, m: (m.get("params") or {}).get("version") != "1.1.0")
    dev = Device(tmp_path, amqtt, product, ota)
    path = tmp_path / "config.json"
    cfg = json.loads(path.read_text())
    cfg["confirm_timeout_s"] = 2                  # the top-level key, not mqtt.confirm_timeout_s
    path.write_text(json.dumps(cfg))
    plat = platforms(amqtt, product, answer_report_info=no_reply_for_new)
    proc = dev.boot(20000)
    assert plat.wait_report(DEV, timeout=15)
    token = plat.push_image(DEV, "1.1.0", build_image.build_image("1.1.0", size=100000),
                            push.ImageHost(server=ota), "single")
    rc, log = dev.finish(proc)
    assert rc == REBOOT, log
    rc, log2 = dev.run(10000)                     # the new image: never confirmed
    assert rc == REBOOT and "boot 1.1.0 state pending-verify" in log2, log2
    assert "new image not confirmed within 2 s" in log2
    rc, log3 = dev.run(3000)                      # the bootloader rolled back
    assert "boot 1.0.0" in log3, log3
    got = plat.wait_step(DEV, FAIL_STEPS, token, timeout=5)
    assert got and got["step"] == -3, got
    assert got["desc"] == "rolled back to 1.0.0: 1.1.0 not confirmed within 2 s", got
    assert 100 not in steps(plat, DEV, token)


UNIT = """
import json, time
from firmware.board import sim
from firmware import confirm_deadline as cd, watchdog
b = sim.Board({})
reboots = []
b.reboot = lambda: reboots.append(b.ota_state())
out = [cd.timeout_s({}), cd.timeout_s({"confirm_timeout_s": 0}),
       cd.timeout_s({"confirm_timeout_s": 7, "mqtt": {"confirm_timeout_s": 3}}),
       cd.timeout_s({"confirm_timeout_s": "x"})]
cd.arm(b, {"confirm_timeout_s": 0.2}, "1.1.0")
watchdog.feed()
out.append(len(reboots))                       # not yet
time.sleep_ms(250)
if MARK:
    b.Partition.mark_app_valid_cancel_rollback()
watchdog.feed()                                # any feed runs the deadline
watchdog.feed()
out.append(reboots)
print(json.dumps(out))
"""


@pytest.mark.parametrize("mark", [False, True])
def test_the_deadline_runs_from_any_feed_and_spares_a_confirmed_image(sim_root, mark):
    install_pending_image(sim_root, "1.1.0")
    out = mpy_json("MARK = %s\n" % mark + UNIT, cwd=sim_root)
    assert out[:5] == [300, 0, 3, 300, 0]
    assert out[5] == ([] if mark else ["pending-verify"])   # once, and only when still pending


def test_a_valid_image_arms_no_deadline(sim_root):
    out = mpy_json("""
import json
from firmware.board import sim
from firmware import confirm_deadline as cd
cd.arm(sim.Board({}), {"confirm_timeout_s": 0.01}, "1.0.0")
print(json.dumps(cd._due))
""", cwd=sim_root)
    assert out is None
