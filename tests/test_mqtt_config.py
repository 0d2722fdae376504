"""Which MQTT settings drive upgrade pushes (firmware/mqtt_config.py), on the unix port and
without a socket: config.json's broker always wins over the OTA check's `mqtt` section, which
on a xiaozhi server is the voice-chat gateway."""
import json

from conftest import mpy_json

MAC = "d40606b6a9fb"
# What xinnan-tech's xiaozhi-esp32-server sends: the chat gateway, no iThings identity.
GATEWAY = {"endpoint": "gw.example.com:1883",
           "client_id": "GID_esp-box-3@@@D4_06_06_B6_A9_FB@@@2b9c6f1e-0000-4000-8000-000000000000",
           "username": "gw-user", "password": "gw-pass",
           "publish_topic": "device-server", "subscribe_topic": "devices/p2p/D4_06_06_B6_A9_FB"}
ITHINGS = {"endpoint": "things.example.com:1883", "client_id": "26wrGK4KbrW&dev7",
           "username": "tu", "password": "tp"}

PICK = """
import json, binascii
from firmware import mqtt_config
mac = binascii.unhexlify(%r)
out = []
for cfg, section in json.loads(%r):
    p = mqtt_config.pick(cfg, section)
    out.append([p["source"], p["host"], p["port"], p["product_id"], p["device_name"],
                p["client_id"], p["username"], p["password"],
                mqtt_config.off_reason(cfg, section, mac)])
print(json.dumps(out))
"""


def pick(cases):
    return mpy_json(PICK % (MAC, json.dumps(cases)))


def test_a_configured_broker_wins_over_the_servers_gateway_section():
    cfg = {"host": "10.0.0.2", "port": 1884, "product_id": "P1", "username": "cu", "password": "cp"}
    [r] = pick([[cfg, GATEWAY]])
    assert r == ["config", "10.0.0.2", 1884, "P1", None, None, "cu", "cp", None]
    # ... even when the section is an iThings one: the config is explicit
    [r] = pick([[cfg, ITHINGS]])
    assert r[:3] == ["config", "10.0.0.2", 1884] and r[6:8] == ["cu", "cp"]


def test_without_a_configured_broker_only_an_ithings_section_drives_pushes():
    gw, ith, keys, none = pick([
        [{}, GATEWAY],
        [{}, ITHINGS],
        [{}, {"endpoint": "b:1883", "product_id": "P2", "device_name": "d2"}],
        [{"product_id": "P"}, None],
    ])
    assert gw[0] == "config" and gw[1] is None
    assert "not an iThings broker" in gw[8] and "from_ota_check" in gw[8]
    assert ith == ["ota_check", "things.example.com", 1883, "26wrGK4KbrW", "dev7",
                   "26wrGK4KbrW&dev7", "tu", "tp", None]
    assert keys[:5] == ["ota_check", "b", 1883, "P2", "d2"] and keys[8] is None
    assert none[1] is None and none[8] == "mqtt.host not configured"


def test_from_ota_check_opts_into_the_servers_section():
    [r] = pick([[{"from_ota_check": True, "product_id": "P3"}, GATEWAY]])
    assert r[:4] == ["ota_check", "gw.example.com", 1883, "P3"]
    assert r[5] == GATEWAY["client_id"] and r[6:8] == ["gw-user", "gw-pass"] and r[8] is None
    # opted in, but the section has no identity and the config none either: says why
    [r] = pick([[{"from_ota_check": True}, GATEWAY]])
    assert r[0] == "ota_check" and r[8] == "mqtt product_id not configured"


def test_a_configured_broker_without_product_id_is_reported_as_such():
    [r] = pick([[{"host": "h"}, GATEWAY]])
    assert r[:2] == ["config", "h"] and r[8] == "mqtt product_id not configured"
