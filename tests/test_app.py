"""The app's state machine on the simulated board: confirming the running image after the first
successful check, rollback when the server is never reached, retries with backoff, updates."""
import json
import os
import re
import threading
import time

import pytest

import build_image
import ota_server
from conftest import free_port, run_mpy
from ota_helpers import boot, install_pending_image, make_root, ota_state, settings, spawn


@pytest.fixture
def srv():
    s = ota_server.run_in_thread(auto_activate_s=0)
    yield s
    s.stop()


def test_first_successful_check_confirms_the_new_image(tmp_path, srv):
    root = make_root(tmp_path, srv.ota_url)
    install_pending_image(root, "1.1.0")
    p = boot(root, run_until="listen")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "firmware 1.1.0 in ota_1 (pending-verify)" in out
    assert re.search(r"image confirmed \(first successful OTA check\): firmware 1.1.0, state valid", out)
    assert out.index("POST ") < out.index("image confirmed")
    assert ota_state(root) == ["ota_1", "1.1.0", "valid"]     # and it stays, boot after boot
    assert ota_state(root) == ["ota_1", "1.1.0", "valid"]


def test_an_image_that_never_reaches_its_server_rolls_back(tmp_path):
    root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % free_port())
    install_pending_image(root, "1.1.0")
    p = boot(root, run_until="offline")
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "OTA check failed (1/3): connect failed" in out
    assert re.search(r"OTA check failed \(1/3\): .*; retry in 0\.05 s", out)
    assert re.search(r"OTA check failed \(2/3\): .*; retry in 0\.10 s", out)   # doubling
    assert "OTA check failed (3/3)" in out and "giving up for now" in out
    assert "image confirmed" not in out
    assert ota_state(root)[:2] == ["ota_0", "1.0.0"]            # the bootloader rolled it back


def test_an_unconfirmed_image_that_gives_up_reboots_itself_into_the_rollback(tmp_path):
    root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % free_port())
    install_pending_image(root, "1.1.0")
    p = boot(root)                                    # no run_until: the device decides itself
    assert p.returncode == 3, p.stdout + p.stderr     # it reset the chip ...
    assert "new image never confirmed, rebooting to roll back" in p.stdout
    assert ota_state(root)[:2] == ["ota_0", "1.0.0"]  # ... and the bootloader rolled it back


def test_a_confirmed_image_that_gives_up_waits_instead_of_rebooting(tmp_path):
    root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % free_port(), offline_s=0.05)
    install_pending_image(root, "1.1.0")
    run_mpy("from firmware.board import sim\nsim.Board({}).Partition.mark_app_valid_cancel_rollback()",
            cwd=root)
    assert ota_state(root) == ["ota_1", "1.1.0", "valid"]
    out, offline, code = _run_until_offline_twice(root)
    assert offline >= 2, out                                     # offline, retried, offline again
    assert "rebooting to roll back" not in out and code != 3


def _run_until_offline_twice(root):
    """Run the device until it has gone offline twice (or 20 s); (output, offline count, rc)."""
    proc = spawn(root)
    try:
        deadline = time.time() + 20
        lines = []
        while time.time() < deadline and sum("offline:" in line for line in lines) < 2:
            lines.append(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    return "".join(lines), sum("offline:" in line for line in lines), proc.returncode


def test_confirm_by_mqtt_leaves_the_image_unconfirmed_after_the_check(tmp_path, srv):
    root = make_root(tmp_path, srv.ota_url, confirm_by="mqtt")
    install_pending_image(root, "1.1.0")
    p = boot(root, run_until="listen")
    assert p.returncode == 0
    assert "image confirmation left to mqtt" in p.stdout and "image confirmed" not in p.stdout
    assert ota_state(root)[:2] == ["ota_0", "1.0.0"]           # nobody confirmed: rolled back


def test_server_errors_are_retried_with_reasons_then_succeed(tmp_path, srv):
    root = make_root(tmp_path, srv.ota_url)
    srv.inject("error500", count=1)
    srv.inject("garbage", count=1)
    p = boot(root, run_until="listen")
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "OTA check failed (1/3): HTTP 500: Failed to read device auto_update status; retry in" in out
    assert "OTA check failed (2/3): answer is not JSON; retry in" in out
    assert "problem: " in out or "failure | " in out              # shown on the screen too
    assert "image confirmed" in out
    assert "mqtt" not in settings(root) and "timezone" in settings(root)


def test_a_server_that_comes_back_during_the_backoff_is_reached(tmp_path):
    port = free_port()
    root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % port,
                     retry={"base_s": 0.4, "factor": 2, "max_s": 5, "tries": 6, "jitter": 0.25})
    holder = {}

    def later():
        time.sleep(0.6)
        holder["srv"] = ota_server.run_in_thread(port=port, auto_activate_s=0)
    t = threading.Thread(target=later)
    t.start()
    try:
        p = boot(root, run_until="listen")
    finally:
        t.join()
        holder["srv"].stop()
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OTA check failed (1/6)" in p.stdout and "image confirmed" in p.stdout


def test_a_chat_gateway_mqtt_section_keeps_the_recheck_interval_and_says_so_once(tmp_path):
    """xiaozhi-esp32-server's `mqtt` section (its voice-chat gateway, no iThings identity) and no
    broker in config.json: no pushes, said once at info level, and re-checks keep the interval."""
    gateway = {"endpoint": "127.0.0.1:%d" % free_port(),
               "client_id": "GID_esp-box-3@@@{mac}@@@{client_id}", "username": "gw",
               "password": "gw-secret", "publish_topic": "device-server",
               "subscribe_topic": "devices/p2p/{mac}"}
    s = ota_server.run_in_thread(auto_activate_s=0, mqtt=gateway)
    interval = 2.0
    root = make_root(tmp_path, s.ota_url, recheck_interval_s=interval)
    proc = spawn(root)
    try:
        deadline = time.time() + 15
        while time.time() < deadline and len([r for r in s.requests if r["endpoint"] == "ota"]) < 4:
            time.sleep(0.1)
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        s.stop()
    times = [r["time"] for r in s.requests if r["endpoint"] == "ota"]
    assert len(times) >= 4, out
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < interval * 1.25 + 0.4, (gaps, out)       # one jittered interval, not two
    assert out.count("MQTT upgrade pushes off") == 1, out
    assert "I app: MQTT upgrade pushes off: config.json names no broker" in out
    assert "E mqtt" not in out and "connecting to" not in out
    assert settings(root)["mqtt"]["client_id"].startswith("GID_esp-box-3@@@")   # chat settings kept


def test_unconfigured_device_prints_its_request_and_stops(tmp_path):
    root = make_root(tmp_path, None)
    p = boot(root)
    assert p.returncode == 0
    assert "no ota_url in config.json" in p.stdout
    req = json.loads(p.stdout.strip().splitlines()[-1])
    assert req["headers"]["Device-Id"] == "D4:06:06:B6:A9:FB" and req["body"]["ota"] == {"label": "ota_0"}


def test_offered_update_installs_reboots_and_confirms(tmp_path, srv):
    srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
    root = make_root(tmp_path, srv.ota_url)
    first = boot(root, run_until="listen")
    assert first.returncode == 3, first.stdout + first.stderr     # rebooted into the update
    assert "installing 1.2.0" in first.stdout and "rebooting into it" in first.stdout
    second = boot(root, run_until="listen")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "firmware 1.2.0 in ota_1 (pending-verify)" in second.stdout
    assert "image confirmed" in second.stdout and "up to date" in second.stdout
    assert ota_state(root) == ["ota_1", "1.2.0", "valid"]


def test_forced_reinstall_happens_once(tmp_path, srv):
    srv.set_offer("esp-box-3", "1.0.0", build_image.build_image("1.0.0"), force=True)
    root = make_root(tmp_path, srv.ota_url)
    assert boot(root, run_until="listen").returncode == 3
    again = boot(root, run_until="listen")
    assert again.returncode == 0, again.stdout
    assert "was installed before; not again" in again.stdout


def test_failed_download_keeps_the_running_image(tmp_path, srv):
    srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
    srv.inject("corrupt", count=10, endpoint="firmware")
    root = make_root(tmp_path, srv.ota_url)
    p = boot(root, run_until="listen", timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "update to 1.2.0 failed" in p.stdout
    assert ota_state(root)[:2] == ["ota_0", "1.0.0"]


def test_wifi_failure_backs_off_and_goes_offline(tmp_path):
    import mkflash
    from ota_helpers import FAST
    cfg = dict(FAST, ota_url="http://127.0.0.1:1/xiaozhi/ota/")
    root = mkflash.make_device_root(str(tmp_path), config=cfg,
                                    wifi={"ssid": "SimWiFi", "fail": True})
    p = boot(root, run_until="offline")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Wi-Fi failed (1/3): Wi-Fi: cannot join" in p.stdout
    assert "Wi-Fi failed (3/3)" in p.stdout and "POST " not in p.stdout


def test_an_unexpected_error_is_logged_backed_off_and_never_crashes(tmp_path):
    import mkflash
    from ota_helpers import FAST
    root = mkflash.make_device_root(str(tmp_path), config=dict(FAST, ota_url="http://127.0.0.1:1/"),
                                    wifi="not an object")   # the sim's wifi_connect trips over it
    p = boot(root, run_until="offline")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("unexpected error in state wifi") == 3
    assert "stopping on entering state offline" in p.stdout


def test_a_start_up_error_resets_the_chip_instead_of_stopping_at_the_repl(tmp_path):
    root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % free_port(), fatal_reset_s=0)
    with open(os.path.join(root, "flash.bin"), "r+b") as f:   # a corrupt partition table
        f.seek(0x8000 + 9)
        f.write(b"\x41")
    p = boot(root)
    assert p.returncode == 3, p.stdout + p.stderr        # reset, not a traceback at the REPL
    assert "fatal start-up error" in p.stdout


def test_a_build_without_rollback_updates_says_so_and_never_reboots_to_roll_back(tmp_path, srv):
    # set_boot writes UNDEFINED there (esp_ota_ops.c set_new_state_otadata), the bootloader
    # leaves it alone, and esp_ota_mark_app_valid_cancel_rollback still writes VALID.
    import mkflash
    from ota_helpers import FAST
    srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
    root = mkflash.make_device_root(str(tmp_path), config=dict(FAST, ota_url=srv.ota_url),
                                    rollback=False)
    assert boot(root, run_until="listen").returncode == 3              # installed, rebooting
    assert ota_state(root) == ["ota_1", "1.2.0", "undefined"]          # not "pending-verify"
    up = boot(root, run_until="listen")
    assert up.returncode == 0, up.stdout + up.stderr
    assert up.stdout.count("this build has no app rollback (otadata state undefined)") == 1
    assert "image confirmed (first successful OTA check): firmware 1.2.0, state valid" in up.stdout
    # An unconfirmed image of such a build that loses its server waits instead of rebooting:
    # a reset would only start the same image again.
    run_mpy("from firmware.board import sim\nb = sim.Board({})\nb.Partition('ota_0').set_boot()",
            cwd=root)
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(dict(FAST, ota_url="http://127.0.0.1:%d/xiaozhi/ota/" % free_port(),
                       offline_s=0.05), f)
    out, offline, _ = _run_until_offline_twice(root)
    assert "firmware 1.0.0 in ota_0 (undefined)" in out and "no app rollback" in out
    assert offline >= 2, out
    assert "rebooting to roll back" not in out


@pytest.mark.parametrize("case", ["credentials", "scheme", "loop"])
def test_permanent_check_errors_are_not_retried(tmp_path, case):
    from http_fault_server import redirect, start
    port, stop = start(lambda req: redirect("ftp://127.0.0.1/fw.bin") if req.target.endswith("/ftp/")
                       else redirect(req.target))       # "loop": redirects to itself for ever
    url = {"credentials": "http://user:secret@127.0.0.1:%d/xiaozhi/ota/" % port,
           "scheme": "http://127.0.0.1:%d/ftp/" % port,
           "loop": "http://127.0.0.1:%d/xiaozhi/ota/" % port}[case]
    try:
        root = make_root(tmp_path, url)
        p = boot(root, run_until="offline")
    finally:
        stop()
    reason = {"credentials": "credentials in URL not supported", "scheme": "unsupported URL scheme",
              "loop": "too many redirects"}[case]
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OTA check failed: %s; a permanent error, not retried" % reason in p.stdout
    assert "(1/3)" not in p.stdout and "retry in" not in p.stdout


@pytest.mark.parametrize("rev", [{"min_rev_full": 999}, {"max_rev_full": 1}])
def test_an_image_for_another_chip_revision_is_refused_before_anything_is_erased(tmp_path, srv, rev):
    srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0", **rev))
    root = make_root(tmp_path, srv.ota_url)
    old = build_image.build_image("0.9.0")
    with open(os.path.join(root, "flash.bin"), "r+b") as f:   # something in ota_1 to overwrite
        f.seek(0x310000)
        f.write(old)
    p = boot(root, run_until="listen")
    assert p.returncode == 0, p.stdout + p.stderr
    want = "needs chip revision >= v9.99" if "min_rev_full" in rev else "needs chip revision <= v0.1"
    assert "update to 1.2.0 failed: bad image: %s, this chip is v0.2" % want in p.stdout
    with open(os.path.join(root, "flash.bin"), "rb") as f:
        f.seek(0x310000)
        assert f.read(len(old)) == old                     # not a byte of ota_1 was touched


def test_the_simulated_bootloader_refuses_an_image_for_another_chip_revision(tmp_path):
    root = make_root(tmp_path, None)
    with open(os.path.join(root, "flash.bin"), "r+b") as f:
        f.seek(0x310000)
        f.write(build_image.build_image("1.2.0", min_rev_full=999))
    out = run_mpy("""
from firmware.board import sim
b = sim.Board({})
try:
    b.Partition('ota_1').set_boot()
    print("set_boot accepted")
except OSError as e:
    print(e)
b.chip.otadata.set_boot(1, 2)          # select it behind set_boot's back
""", cwd=root).stdout
    # esp_ota_set_boot_partition verifies first (esp_ota_ops.c): OSError(-esp_err), as on the port
    assert "ESP_ERR_OTA_VALIDATE_FAILED" in out and "set_boot accepted" not in out
    assert ota_state(root)[:2] == ["ota_0", "1.0.0"]       # the bootloader fell back


def test_a_power_cut_during_the_first_boot_of_a_new_image_is_retried_and_completes(tmp_path, srv):
    srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
    root = make_root(tmp_path, srv.ota_url)
    assert boot(root, run_until="listen").returncode == 3          # installed, rebooting
    # Power on, and off again before the app runs: the bootloader marked it pending-verify.
    assert ota_state(root) == ["ota_1", "1.2.0", "pending-verify"]
    again = boot(root, run_until="listen")                          # rolled back to 1.0.0
    assert again.returncode == 3, again.stdout + again.stderr       # ... and installed again
    assert "firmware 1.0.0 in ota_0" in again.stdout
    assert ("W app: firmware 1.2.0 rolled back before its health check (power loss or a crash "
            "during its first boot) (-3); running 1.0.0") in again.stdout
    assert "check ok: retrying 1.2.0 (install 2 of 4): it rolled back before its health check" \
        in again.stdout
    up = boot(root, run_until="listen")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "image confirmed" in up.stdout and "rolled back" not in up.stdout
    assert ota_state(root) == ["ota_1", "1.2.0", "valid"]
    assert settings(root)["ota_last_install"]["health"] is True


def test_first_boot_retries_are_capped(tmp_path, srv):
    srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
    root = make_root(tmp_path, srv.ota_url, rollback_retries=1)
    assert boot(root, run_until="listen").returncode == 3           # install 1
    ota_state(root)                                                 # cut during its first boot
    assert boot(root, run_until="listen").returncode == 3           # install 2 of 2
    ota_state(root)                                                 # cut again
    last = boot(root, run_until="listen")
    assert last.returncode == 0, last.stdout + last.stderr
    assert "firmware 1.2.0 from this url was installed before; not again" in last.stdout
    assert ota_state(root)[:2] == ["ota_0", "1.0.0"]


def test_an_image_that_fails_its_own_health_check_is_not_installed_again(tmp_path, srv):
    srv.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
    root = make_root(tmp_path, srv.ota_url)
    assert boot(root, run_until="listen").returncode == 3           # installed, rebooting
    port = int(srv.ota_url.split(":")[2].split("/")[0])
    srv.stop()
    gave_up = boot(root)                                            # its server is gone
    assert gave_up.returncode == 3 and "rebooting to roll back" in gave_up.stdout
    back = ota_server.run_in_thread(port=port, auto_activate_s=0)
    try:
        back.set_offer("esp-box-3", "1.2.0", build_image.build_image("1.2.0"))
        p = boot(root, run_until="listen")
    finally:
        back.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    assert "W app: firmware 1.2.0 rolled back: it failed its health check (-3)" in p.stdout
    assert "firmware 1.2.0 from this url was installed before; not again" in p.stdout
