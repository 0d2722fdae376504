# Board info and the OTA-check request (xiaozhi protocol) built from the live board.
import binascii

from firmware import identity

CHIP_MODEL_NAME = "esp32s3"


def partition_table(board):
    P = board.Partition
    rows = []
    for ptype in (P.TYPE_APP, P.TYPE_DATA):
        for p in P.find(ptype):
            t, st, addr, size, label = p.info()[:5]
            rows.append({"label": label, "type": t, "subtype": st, "address": addr, "size": size})
    rows.sort(key=lambda r: r["address"])
    return rows


def application(board):
    desc = board.app_desc()
    if desc is None:
        return {"name": "unknown", "version": "0.0.0", "compile_time": "", "idf_version": "",
                "elf_sha256": ""}
    # Official MicroPython builds leave the version empty: report 0.0.0 so any offer is newer.
    return {"name": desc.project_name, "version": desc.version or "0.0.0",
            "compile_time": "%s %s" % (desc.date, desc.time), "idf_version": desc.idf_ver,
            "elf_sha256": binascii.hexlify(desc.elf_sha256).decode()}


def body(board, config, client_id, app=None):
    mac = identity.format_mac(board.mac(), config.get("device_id_case", "upper"))
    wifi = board.wifi()
    app = app or application(board)
    running = board.Partition(board.Partition.RUNNING).info()[4]
    return {
        "version": 2,
        "language": config.get("language", "zh-CN"),
        "uuid": client_id,
        "application": app,
        "ota": {"label": running},
        "board": {"type": board.type, "name": board.name, "ssid": wifi["ssid"], "rssi": wifi["rssi"],
                  "channel": wifi["channel"], "ip": wifi["ip"], "mac": mac},
        "flash_size": board.flash_size(),
        "psram_size": board.psram_size(),
        "minimum_free_heap_size": board.min_free_heap(),
        "mac_address": mac,
        "chip_model_name": CHIP_MODEL_NAME,
        "chip_info": board.chip_info(),
        "partition_table": partition_table(board),
    }


def headers(board, config, client_id, app_version):
    serial = board.serial()
    h = {
        "Activation-Version": "2" if serial else "1",
        "Device-Id": identity.format_mac(board.mac(), config.get("device_id_case", "upper")),
        "Client-Id": client_id,
        "User-Agent": "%s/%s" % (board.type, app_version),
        "Accept-Language": config.get("language", "zh-CN"),
        "Content-Type": "application/json",
    }
    if serial:
        h["Serial-Number"] = serial
    return h


def ota_request(board, config):
    """{"headers": ..., "body": ...}: exactly what the OTA check POSTs."""
    client_id = identity.client_id(board.settings)
    app = application(board)
    return {"headers": headers(board, config, client_id, app["version"]),
            "body": body(board, config, client_id, app)}
