# iThings device OTA protocol (DESIGN.md section 3): topics, message builders, decoding of what
# comes down (push admission: ithings_push.py).
# Pure protocol: no sockets, no flash, no clock (callers pass timestamps) -- testable anywhere.
import json
import os

# Progress step codes (the platform's own meaning).
STEP_DOWNLOAD_FAILED = -1   # download or initialisation
STEP_INTEGRITY_FAILED = -2  # md5 / size / image header
STEP_WRITE_FAILED = -3      # flash write or boot switch (also: rolled back after reboot)
STEP_PACKAGE_REFUSED = -4   # version or package type (diff, signMethod, same version, module)
STEP_DONE = 100
FAIL_CODES = (-1, -2, -3, -4)

DESC_MAX = 64                # progress desc stays short
TOKEN_MAX = 64               # longer tokens are treated as malformed
_SECRET_MARKS = ("://", "?", "=", "x-amz", "signature", "token", "password", "secret")


class Topics:
    """The five per-device topics. Never wildcards: IDs with / + # or NUL are refused."""

    def __init__(self, product_id, device_name):
        for name, v in (("product_id", product_id), ("device_name", device_name)):
            if not isinstance(v, str) or not v:
                raise ValueError("mqtt %s not configured" % name)
            for c in "/+#\0":
                if c in v:
                    raise ValueError("mqtt %s must not contain %r" % (name, c))
        pd = "%s/%s" % (product_id, device_name)
        self.product_id = product_id
        self.device_name = device_name
        self.client_id = "%s&%s" % (product_id, device_name)
        self.ota_down = "$ota/down/upgrade/" + pd
        self.thing_down = "$thing/down/property/" + pd
        self.thing_up = "$thing/up/property/" + pd
        self.ota_report = "$ota/up/report/" + pd
        self.progress = "$ota/up/progress/" + pd

    def subscriptions(self):
        return (self.ota_down, self.thing_down)


def default_device_name(mac):
    """deviceName when the config names none: the Wi-Fi MAC as 12 upper-case hex digits."""
    return "".join("%02X" % b for b in mac)


def new_token():
    """A msgToken: 16 random hex digits (unique enough per device and message)."""
    return "".join("%02x" % b for b in os.urandom(8))


# ---- messages the device sends -------------------------------------------------------------------

def _encode(method, token, ts_ms, params):
    return json.dumps({"method": method, "msgToken": token, "timestamp": int(ts_ms),
                       "params": params}).encode()


def report_info(token, ts_ms, version, module="default", mac=None, rssi=None, local_ip=None):
    """reportInfo on $thing/up/property: how the current platform learns the running version."""
    params = {"version": version, "module": module}
    if mac is not None:
        params["mac"] = mac
    if rssi is not None:
        params["rssi"] = rssi
    if local_ip is not None:
        params["localIp"] = local_ip
    return _encode("reportInfo", token, ts_ms, params)


def report(token, ts_ms, version, module="default"):
    """report on $ota/up/report (documented, answered with an error by current platforms)."""
    return _encode("report", token, ts_ms, {"version": version, "module": module})


def contains_any(text, parts):
    for p in parts:
        if p in text:
            return True
    return False


def safe_desc(text):
    """A progress desc: short, and without anything that looks like a URL, query or secret."""
    words = []
    for w in str(text).split():
        words.append("[redacted]" if contains_any(w.lower(), _SECRET_MARKS) else w)
    out = " ".join(words)
    return out if len(out) <= DESC_MAX else out[:DESC_MAX - 3] + "..."


def progress(token, ts_ms, step, desc, module=None):
    """progress on $ota/up/progress: step 1..100 while updating, -1..-4 on failure (never 0)."""
    step = int(step)
    if not (1 <= step <= 100 or step in FAIL_CODES):
        raise ValueError("progress step %d out of range" % step)
    params = {"step": step, "desc": safe_desc(desc)}
    if module:
        params["module"] = module
    return _encode("progress", token, ts_ms, params)


# ---- messages the device receives ----------------------------------------------------------------

def decode(msg):
    """A message as a dict, or None when it is not a JSON object."""
    if isinstance(msg, dict):
        return msg
    try:
        obj = json.loads(msg)
    except (ValueError, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


def token_of(obj):
    """msgToken, or the older clientToken; None when absent or malformed."""
    for k in ("msgToken", "clientToken"):
        t = obj.get(k)
        if isinstance(t, (str, int)) and not isinstance(t, bool):
            t = str(t)
            if 0 < len(t) <= TOKEN_MAX:
                return t
    return None


def reply_code(obj):
    c = obj.get("code")
    if isinstance(c, str) and c.isdigit():
        c = int(c)
    return c if isinstance(c, int) else None


def has_files(obj):
    """True for the seed's reportInfoReply that carries an upgrade offer in data.files."""
    data = obj.get("data")
    return isinstance(data, dict) and isinstance(data.get("files"), list) and len(data["files"]) > 0


def parse_reply(msg):
    """(method, token, code, obj) of any down message; None when not a JSON object."""
    obj = decode(msg)
    if obj is None:
        return None
    return obj.get("method"), token_of(obj), reply_code(obj), obj
