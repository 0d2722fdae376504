"""Board info and the OTA-check request, printed by main.py on the simulated board."""
import json
import os
import re

import mkflash
from conftest import ROOT, run_mpy

MAC_UPPER = re.compile(r"^([0-9A-F]{2}:){5}[0-9A-F]{2}$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def boot(root):
    out = run_mpy(script=os.path.join(ROOT, "main.py"), cwd=root).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_request_has_every_field_of_the_spec(sim_root):
    req = boot(sim_root)
    h, b = req["headers"], req["body"]
    assert h["Activation-Version"] == "1" and "Serial-Number" not in h
    assert MAC_UPPER.match(h["Device-Id"]) and h["Device-Id"] == mkflash.DEFAULT_MAC
    assert UUID4.match(h["Client-Id"])
    assert h["User-Agent"] == "esp-box-3/1.0.0"
    assert h["Content-Type"] == "application/json"
    assert h["Accept-Language"] == b["language"]
    assert b["uuid"] == h["Client-Id"] and b["mac_address"] == h["Device-Id"] == b["board"]["mac"]
    assert b["chip_model_name"] == "esp32s3"
    assert b["chip_info"] == {"model": 9, "cores": 2, "revision": 2, "features": 0x12}
    assert b["flash_size"] == 16 * 1024 * 1024 and b["psram_size"] == 16 * 1024 * 1024
    assert isinstance(b["minimum_free_heap_size"], int) and b["minimum_free_heap_size"] > 0
    app = b["application"]
    assert app["version"] == "1.0.0" and app["name"] == "micropython"
    assert re.match(r"^[0-9a-f]{64}$", app["elf_sha256"]) and app["idf_version"]
    assert b["ota"] == {"label": "ota_0"}
    assert set(b["board"]) == {"type", "name", "ssid", "rssi", "channel", "ip", "mac"}
    assert b["board"]["ssid"] == "SimWiFi" and b["board"]["rssi"] == -45
    labels = [(p["label"], p["type"], p["subtype"], p["address"], p["size"]) for p in b["partition_table"]]
    assert labels == [(label, t, st, off, size) for label, t, st, off, size, _ in mkflash.load_table()]


def test_client_id_persists_across_boots_and_is_new_per_device(tmp_path):
    a = mkflash.make_device_root(str(tmp_path / "a"))
    b = mkflash.make_device_root(str(tmp_path / "b"), mac="D4:06:06:00:00:01")
    first, second, other = boot(a), boot(a), boot(b)
    assert first["headers"]["Client-Id"] == second["headers"]["Client-Id"]
    assert other["headers"]["Client-Id"] != first["headers"]["Client-Id"]
    assert other["headers"]["Device-Id"] == "D4:06:06:00:00:01"


def test_activation_version_2_with_efuse_serial(tmp_path):
    root = mkflash.make_device_root(str(tmp_path), serial="SN-ESPBOX3-000123", hmac_key="11" * 32)
    h = boot(root)["headers"]
    assert h["Activation-Version"] == "2"
    assert h["Serial-Number"] == "SN-ESPBOX3-000123"


def test_device_id_case_is_a_setting(tmp_path):
    root = mkflash.make_device_root(str(tmp_path), config={"device_id_case": "lower"})
    h = boot(root)["headers"]
    assert h["Device-Id"] == mkflash.DEFAULT_MAC.lower()
