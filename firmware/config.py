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
    "tls": {"verify": True, "ca_file": None, "allow_http_redirect": False},
    "http_timeout_ms": 10000,
    "http_deadline_s": 30,
    "watchdog_s": 120,
    "confirm_timeout_s": 300,
    "rollback_retries": 3,
    "retry": {"base_s": 10, "factor": 2, "max_s": 1800, "tries": 10, "jitter": 0.25},
    "activation": {"recheck_s": 15, "poll_s": 3},
    "recheck_interval_s": 3600,
    "offline_s": 1800,
    "fatal_reset_s": 10,
    # mqtt.port None: 1883, or 8883 with tls. mqtt.host wins over the OTA check's `mqtt`
    # section; from_ota_check lets that section name the broker (mqtt_config.py has the rule)
    "mqtt": {"host": None, "from_ota_check": False, "port": None, "tls": False, "ca_file": None, "product_id": None,
             "device_name": None, "username": None, "password": None, "keepalive": 60,
             "http_base": None, "report_ota_topic": False, "allowed_schemes": ["https", "http"],
             "download_jitter_ms": 5000, "module": "default", "confirm_timeout_s": None,
             "reconnect_max_ms": 60000, "allow_downgrade": False},
    "confirm_by": "ota_check",
    # Secure Boot V2 signatures (firmware/secure_boot.py): trusted_keys are SHA-256 key digests
    # in hex (`tools/sign_image.py digest`); require_signature None = on once any key is known.
    # min_rate_*: a download slower than that is retried once, then fails (update/pace.py)
    "update": {"require_signature": None, "trusted_keys": [], "min_rate_bps": 1024,
               "min_rate_window_s": 30},
    "display": {"autoshot": False, "shot_dir": "screenshots"},
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


def number(section, key, default):
    """A non-negative number from a config section, else `default` (a bad value never crashes)."""
    v = section.get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else default
