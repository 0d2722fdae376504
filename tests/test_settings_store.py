"""A damaged settings store on the simulated board (settings.json, NVS's stand-in): logged loudly,
kept aside as settings.json.bad, the keys that still parse kept (per key, as NVS loses only a
damaged entry), and no wrong type ever sends the device round an error loop."""
import json
import os

import pytest

from ota_helpers import boot, make_root, settings
from test_app import srv  # noqa: F401 -- the local OTA server fixture

UUID = "0f8e1d2c-3b4a-4596-8877-665544332211"
MQTT = {"endpoint": "broker.local:1883", "client_id": "P&dev", "username": "u", "password": "p"}


def _write(root, raw):
    with open(os.path.join(root, "settings.json"), "wb") as f:
        f.write(raw)


def test_a_torn_settings_file_keeps_what_parses_and_the_bad_copy(tmp_path, srv):
    root = make_root(tmp_path, srv.ota_url)
    whole = json.dumps({"uuid": UUID, "mqtt": MQTT, "timezone": {"name": "Asia/Shanghai"}})
    torn = whole[:whole.index("Asia") + 2].encode()         # cut inside the last value
    _write(root, torn)
    p = boot(root, run_until="listen")
    assert p.returncode == 0, p.stdout + p.stderr
    assert ("E settings: settings.json is damaged (not a JSON object); kept it as "
            "settings.json.bad and recovered 2 key(s): mqtt, uuid") in p.stdout
    with open(os.path.join(root, "settings.json.bad"), "rb") as f:
        assert f.read() == torn
    assert srv.requests[-1]["headers"]["Client-Id"] == UUID  # the device kept its identity
    assert settings(root)["uuid"] == UUID


@pytest.mark.parametrize("raw", [b"[]", b"", b"\x00\xff garbage", b"42"])
def test_a_settings_file_without_an_object_never_loops(tmp_path, srv, raw):
    root = make_root(tmp_path, srv.ota_url)
    _write(root, raw)
    p = boot(root, run_until="listen")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "E settings: settings.json is damaged" in p.stdout
    assert "recovered 0 key(s): none" in p.stdout
    assert "unexpected error" not in p.stdout and "image confirmed" in p.stdout
    with open(os.path.join(root, "settings.json.bad"), "rb") as f:
        assert f.read() == raw
    assert isinstance(settings(root).get("uuid"), str)      # a fresh store, written normally


def test_wrong_types_in_every_key_are_survived(tmp_path, srv):
    root = make_root(tmp_path, srv.ota_url)
    wrong = {"uuid": 5, "mqtt": [], "websocket": 2, "timezone": "x", "ota_last_install": "x",
             "ota_resume": 7, "mqtt_ota_pending": [1], "mqtt_ota_last": 3}
    _write(root, json.dumps(wrong).encode())
    p = boot(root, run_until="listen")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "unexpected error" not in p.stdout and "damaged" not in p.stdout
    assert "image confirmed" in p.stdout
    assert isinstance(settings(root)["uuid"], str) and len(settings(root)["uuid"]) == 36
