"""The pinned lib/ copy of a package wins over a frozen module of the same name.

On a board sys.path is ['', '.frozen', '/lib'] (ports/esp32/main.c:144), and every MicroPython
release freezes its own umqtt.simple, so a plain import never reaches lib/. These tests use the
unix port's real frozen modules (it freezes `requests`) as the stand-in for the board's frozen
umqtt: the same lookup (py/builtinimport.c, the ".frozen" sys.path entry)."""
import os

from conftest import ROOT, mpy_json

PROBE = """
import json, sys
from firmware import lib_first
plain = __import__("requests")
out = {"plain": getattr(plain, "MARK", "frozen")}
del sys.modules["requests"]
before = list(sys.path)
mod = lib_first.load("requests")
out["loaded"] = getattr(mod, "MARK", "frozen")
out["path_restored"] = sys.path == before
out["again_same"] = lib_first.load("requests") is mod
print(json.dumps(out))
"""


def _decoy(tmp_path):
    lib = tmp_path / "lib"
    (lib / "requests").mkdir(parents=True)
    (lib / "requests" / "__init__.py").write_text('MARK = "lib"\n')
    return str(lib)


def test_board_order_imports_the_frozen_copy_and_load_the_lib_one(tmp_path):
    lib = _decoy(tmp_path)
    res = mpy_json(PROBE, env={"MICROPYPATH": ":".join([ROOT, ".frozen", lib])})
    # a plain import takes the frozen module, exactly the board's trap; load() takes lib's
    assert res == {"plain": "frozen", "loaded": "lib", "path_restored": True, "again_same": True}


def test_without_a_lib_copy_the_frozen_one_still_loads(tmp_path):
    res = mpy_json(PROBE, env={"MICROPYPATH": ":".join([ROOT, ".frozen", str(tmp_path)])})
    assert res["plain"] == "frozen" and res["loaded"] == "frozen" and res["path_restored"]


def test_the_mqtt_session_runs_the_pinned_umqtt():
    # the tests' (and the sim's) sys.path has the board's order, lib/ after .frozen
    res = mpy_json("""
import json, sys
from firmware import mqtt_session
print(json.dumps([mqtt_session._umqtt.__file__, sys.path]))
""")
    path, sys_path = res
    lib = os.path.join(ROOT, "lib")
    assert sys_path.index(".frozen") < sys_path.index(lib)
    assert os.path.samefile(path, os.path.join(lib, "umqtt", "simple.py"))
    # 1.3.4 (lib/lock.json's pin), not a frozen 1.4.0: that one's MQTTClient has no ssl_params
    assert "ssl_params" in open(path).read()
