"""Make a simulated ESP-BOX-3 device root: what a freshly flashed board holds.

    python tools/mkflash.py DIR [--version 1.0.0] [--serial SN] [--hmac-key HEX] [--config FILE]

Writes DIR/flash.bin (16 MiB NOR flash: 0xFF everywhere, the OTA partition table at 0x8000,
blank otadata, an app image of `version` in ota_0), DIR/sim.json (the fake efuse, Wi-Fi and
paths) and DIR/config.json (the device config; copied from --config or a default pointing at
nothing).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_image  # noqa: E402
import partition_table  # noqa: E402

FLASH_SIZE = 16 * 1024 * 1024
CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "board", "partitions-esp-box-3-ota.csv")
DEFAULT_MAC = "D4:06:06:B6:A9:FB"


def load_table(csv_path=CSV):
    with open(csv_path) as f:
        rows = partition_table.parse_csv(f.read())
    partition_table.validate(rows, FLASH_SIZE)
    return rows


def find(rows, label):
    for row in rows:
        if row[0] == label:
            return row
    raise KeyError(label)


def make_flash(path, version="1.0.0", image=None, csv_path=CSV):
    rows = load_table(csv_path)
    if image is None:
        image = build_image.build_image(version)
    ota0 = find(rows, "ota_0")
    if len(image) > ota0[4]:
        raise ValueError("image of %d bytes does not fit ota_0 (%d)" % (len(image), ota0[4]))
    flash = bytearray(b"\xff" * FLASH_SIZE)
    table = partition_table.to_binary(rows)
    flash[partition_table.TABLE_OFFSET:partition_table.TABLE_OFFSET + len(table)] = table
    flash[ota0[3]:ota0[3] + len(image)] = image
    with open(path, "wb") as f:
        f.write(flash)


def sim_config(mac=DEFAULT_MAC, serial=None, hmac_key=None, **extra):
    cfg = {
        "flash": "flash.bin",
        "settings": "settings.json",
        "mac": mac,
        "serial": serial,
        "hmac_key": hmac_key,
        "chip_revision": 2,
        "psram_size": 16 * 1024 * 1024,
        "wifi": {"ssid": "SimWiFi", "rssi": -45, "channel": 6, "ip": "127.0.0.1"},
        "screenshots": "screens",
    }
    cfg.update(extra)
    return cfg


def make_device_root(root, version="1.0.0", serial=None, hmac_key=None, config=None, mac=DEFAULT_MAC,
                     image=None, **sim_extra):
    os.makedirs(root, exist_ok=True)
    make_flash(os.path.join(root, "flash.bin"), version, image)
    with open(os.path.join(root, "sim.json"), "w") as f:
        json.dump(sim_config(mac, serial, hmac_key, **sim_extra), f, indent=1)
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(config if config is not None else {"ota_url": None}, f, indent=1)
    return root


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--serial")
    ap.add_argument("--hmac-key")
    ap.add_argument("--mac", default=DEFAULT_MAC)
    ap.add_argument("--config", help="device config.json to copy in")
    args = ap.parse_args(argv)
    config = None
    if args.config:
        with open(args.config) as f:
            config = json.load(f)
    make_device_root(args.root, args.version, args.serial, args.hmac_key, config, args.mac)
    print("device root ready:", args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
