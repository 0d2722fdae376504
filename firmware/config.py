# The device's one config file (config.json at the filesystem root), filled with defaults.
import json

PATH = "config.json"

DEFAULTS = {
    "wifi": {"ssid": None, "password": None},
    "ota_url": None,
    "board_type": "esp-box-3",
    "board_name": "esp-box-3",
    "language": "zh-CN",
    "device_id_case": "upper",
    "tls": {"verify": True, "ca_file": None},
    "mqtt": {"host": None, "port": 1883, "tls": False, "product_id": None, "device_name": None,
             "username": None, "password": None, "keepalive": 60, "http_base": None,
             "report_ota_topic": False, "allowed_schemes": ["https", "http"]},
    "confirm_by": "ota_check",
    "log_level": "info",
}


def _merge(defaults, given):
    out = {}
    for k, v in defaults.items():
        g = given.get(k, v)
        out[k] = _merge(v, g) if isinstance(v, dict) and isinstance(g, dict) else g
    for k, v in given.items():
        if k not in out:
            out[k] = v
    return out


def load(path=PATH):
    try:
        with open(path) as f:
            given = json.load(f)
    except OSError:
        given = {}
    except ValueError as e:
        raise ValueError("config file %s is not valid JSON: %s" % (path, e))
    if not isinstance(given, dict):
        raise ValueError("config file %s must hold a JSON object" % path)
    return _merge(DEFAULTS, given)
