"""Helpers for the OTA check / activation / app tests: device roots and device runs."""
import json
import os
import subprocess

import mkflash
from conftest import MICROPYTHON, ROOT, mpy_env, run_mpy

FAST = {
    "retry": {"base_s": 0.05, "factor": 2, "max_s": 1, "tries": 3, "jitter": 0},
    "activation": {"recheck_s": 0.3, "poll_s": 0.2},
    "http_timeout_ms": 1500,
    "offline_s": 0,
}


def make_root(path, ota_url, serial=None, hmac_key=None, **config):
    cfg = dict(FAST)
    cfg["ota_url"] = ota_url
    cfg.update(config)
    return mkflash.make_device_root(str(path), serial=serial, hmac_key=hmac_key, config=cfg)


def settings(root):
    try:
        with open(os.path.join(root, "settings.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def settings_bytes(root):
    try:
        with open(os.path.join(root, "settings.json"), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


CHECK = """
import json
from firmware import config as C, board as B, ota_check
cfg = C.load()
b = B.load(cfg)
b.settings.get("uuid") or b.settings.set("uuid", "00000000-0000-4000-8000-000000000000")
w0 = b.settings.writes
out = {}
try:
    r = ota_check.check(b, cfg)
    out = {"ok": True, "activation": r.activation, "offer": r.offer, "note": r.firmware_note,
           "mqtt": r.mqtt, "websocket": r.websocket, "server_time": r.server_time,
           "written": r.written}
except ota_check.CheckError as e:
    out = {"ok": False, "reason": e.reason, "status": e.status}
out["writes"] = b.settings.writes - w0
out["time_ms"] = b.time_ms()
print(json.dumps(out))
"""


def check(root, timeout=30):
    """One ota_check.check() on the simulated board in `root`; (result dict, log text)."""
    proc = run_mpy(CHECK, cwd=root, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def boot(root, run_until=None, timeout=60, check=False):
    """Boot main.py once; CompletedProcess (returncode 3 = the device rebooted)."""
    env = {"FW_RUN_UNTIL": run_until} if run_until else None
    return run_mpy(script=os.path.join(ROOT, "main.py"), cwd=root, env=env, timeout=timeout,
                   check=check)


def spawn(root, run_until=None):
    """main.py as a running process with line-buffered stdout (for interactive tests)."""
    env = mpy_env({"FW_RUN_UNTIL": run_until} if run_until else None)
    return subprocess.Popen([MICROPYTHON, os.path.join(ROOT, "main.py")], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)


def install_pending_image(root, version, slot_offset=0x310000):
    """Put an image of `version` in ota_1 and select it: the next boot runs it pending verify."""
    import build_image
    with open(os.path.join(root, "flash.bin"), "r+b") as f:
        f.seek(slot_offset)
        f.write(build_image.build_image(version))
    run_mpy("from firmware.board import sim\nb = sim.Board({})\nb.Partition('ota_1').set_boot()",
            cwd=root)


def ota_state(root):
    """[running label, version, otadata state] -- this is a power-on: the bootloader runs."""
    out = run_mpy("import json\nfrom firmware.board import sim\nb = sim.Board({})\n"
                  "print(json.dumps([b.Partition(b.Partition.RUNNING).info()[4], b.app_desc().version,"
                  " b.ota_state()]))", cwd=root).stdout
    return json.loads(out.strip().splitlines()[-1])
