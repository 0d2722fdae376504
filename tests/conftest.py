"""Shared fixtures: run device code on the real MicroPython unix port, and make simulated boards."""
import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
MICROPYTHON = os.environ.get("MICROPYTHON") or os.path.join(os.path.dirname(sys.executable), "micropython")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)


def mpy_env(extra=None):
    """Environment for a micropython process: our package and the fetched lib/ on its path."""
    env = dict(os.environ)
    # The board's order: '' (the firmware), '.frozen', '/lib' (ports/esp32/main.c:144).
    env["MICROPYPATH"] = ":".join([ROOT, ".frozen", os.path.join(ROOT, "lib")])
    if extra:
        env.update(extra)
    return env


def run_mpy(code=None, script=None, cwd=None, timeout=60, env=None, args=(), heapsize=None, check=True):
    """Run `code` (a string) or `script` (a path) under the unix port; return CompletedProcess."""
    cmd = [MICROPYTHON]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    cmd += ["-c", code] if code is not None else [script]
    cmd += list(args)
    proc = subprocess.run(cmd, cwd=cwd or ROOT, env=mpy_env(env), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("micropython failed (%d):\nstdout:\n%s\nstderr:\n%s"
                             % (proc.returncode, proc.stdout, proc.stderr))
    return proc


def mpy_json(code, **kw):
    """Run code that prints one JSON document as its last stdout line; return it decoded."""
    out = run_mpy(code, **kw).stdout.strip().splitlines()
    return json.loads(out[-1])


@pytest.fixture
def mpy():
    return run_mpy


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sim_root(tmp_path):
    """A fresh simulated ESP-BOX-3: device root folder with flash image (v1.0.0 in ota_0) and sim.json."""
    import mkflash
    mkflash.make_device_root(str(tmp_path), version="1.0.0")
    return str(tmp_path)
