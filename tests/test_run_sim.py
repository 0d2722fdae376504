"""`make run` (tools/run_sim.py): the README's first command, end to end on the unix port."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def run_demo(tmp_path, *extra):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "run_sim.py"), "--exit-when-done",
                           "--root", str(tmp_path / "sim"), "--timeout", "90"] + list(extra),
                          capture_output=True, text=True, timeout=240)
    return proc.returncode, proc.stdout + proc.stderr


def test_make_run_activates_and_applies_a_pushed_update(tmp_path):
    code, out = run_demo(tmp_path)
    assert code == 0, out[-4000:]
    for needle in ("POST http://127.0.0.1", "ACTIVATION CODE", "device activated", "server time applied",
                   "MQTT settings stored", "reportInfo version 1.0.0", "image 1.1.0 written to ota_1",
                   "firmware 1.1.0 in ota_1 (pending-verify)", "update to 1.1.0 confirmed",
                   "device D40606B6A9FB confirmed the update",
                   "pushing firmware 1.2.0 as a delta", "image 1.2.0 written to ota_0",
                   "update to 1.2.0 confirmed", "delta update confirmed by the device"):
        assert needle in out, needle
    info = [line.split("board info: ", 1)[1] for line in out.splitlines() if "I ota: board info: " in line]
    assert len(info) == 3                                   # once per boot: 1.0.0, 1.1.0, 1.2.0
    first, second = json.loads(info[0]), json.loads(info[1])
    assert first["body"]["application"]["version"] == "1.0.0" and first["body"]["ota"]["label"] == "ota_0"
    assert second["body"]["application"]["version"] == "1.1.0" and second["body"]["ota"]["label"] == "ota_1"
    assert [p["label"] for p in first["body"]["partition_table"]][3:5] == ["ota_0", "ota_1"]
    assert first["headers"]["Device-Id"] == "D4:06:06:B6:A9:FB"
    shots = sorted(os.listdir(tmp_path / "sim" / "screens"))
    assert {"activation.png", "updating.png", "success.png", "idle.png"} <= set(shots)


def test_make_run_with_an_efuse_serial_uses_activation_v2(tmp_path):
    code, out = run_demo(tmp_path, "--serial", "SN-SIM-0001", "--no-push")
    assert code == 0, out[-4000:]
    assert "Activation-Version 2" in out
    assert "HMAC" in out and "device activated" in out
