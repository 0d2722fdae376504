# The OTA check (xiaozhi protocol): POST the board info to ota_url, validate the whole answer,
# then apply it -- clock, persisted MQTT/WebSocket settings -- and decide on a firmware offer.
#
# An answer is checked completely before anything is applied (ota_apply), so a garbage answer
# changes nothing stored. Every failure is a CheckError with a reason fit for the screen and
# the log.
import json

from firmware import http_client as _http_client
from firmware import delta_offer, install_record, log, ota_apply, sysinfo, tls_config, version

_log = log.get("ota")
_request_logged = False

ANSWER_LIMIT = 16384       # bytes; an OTA answer is a few hundred
DEFAULT_TIMEOUT_MS = 10000
DEFAULT_DEADLINE_S = 30    # a whole check request, connect to last byte (slow-loris servers)
K_MQTT = ota_apply.K_MQTT  # the stored `mqtt` section (mqtt_config decides what it drives)
K_LAST_INSTALL = install_record.KEY
_NOT_JSON = object()


class CheckError(Exception):
    """permanent: retrying cannot help (a bad URL, an unusable redirect): retry.call gives up."""

    def __init__(self, reason, status=None, permanent=False):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.permanent = permanent


def _permanent(e):
    return bool(getattr(e, "permanent", False))


class Result:
    """What one successful check said, after it was applied."""

    def __init__(self, running_version):
        self.running_version = running_version
        self.activation = None     # {"code", "message", "challenge", "timeout_ms"} or None
        self.offer = None          # {"url", "version", "force", "size", "md5", "sha256", "delta"}
        self.firmware_note = None  # why there is (no) offer, for the log
        self.mqtt = None           # the answer's sections (None when absent)
        self.websocket = None      # with the fresh token (the stored one may be an hour old)
        self.server_time = None    # {"utc_ms", "timezone", "offset_min"} or None
        self.written = []          # settings keys this check wrote or deleted
        self.headers = None        # the request headers (activation v2 sends the same ones)
        self._firmware = None


# ---- transport ------------------------------------------------------------------------------

def timeout_ms(config):
    t = config.get("http_timeout_ms")
    return t if isinstance(t, int) and t > 0 else DEFAULT_TIMEOUT_MS


def deadline_ms(config):
    """http_deadline_s as ms: the time one check (or activation) request may take in all."""
    v = config.get("http_deadline_s")
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
    return int((v if ok else DEFAULT_DEADLINE_S) * 1000)


def post_json(http, url, headers, body, config, timeout=None):
    """POST body as JSON; (status, parsed answer or _NOT_JSON, raw bytes). CheckError on I/O."""
    try:
        resp = http.request("POST", url, headers=headers, body=body,
                            timeout_ms=timeout or timeout_ms(config), tls=tls_config.options(config),
                            deadline_ms=deadline_ms(config))
    except http.HttpError as e:
        raise CheckError(e.reason, getattr(e, "status", None), _permanent(e))
    try:
        raw = resp.read_all(ANSWER_LIMIT)
    except http.HttpError as e:
        raise CheckError(e.reason, resp.status, _permanent(e))
    finally:
        resp.close()
    try:
        data = json.loads(raw)
    except Exception:  # MicroPython raises ValueError; be generous about what "not JSON" is
        data = _NOT_JSON
    return resp.status, data, raw


def error_text(data, raw):
    """The server's own words for an error answer: {"error"} / {"message"}, else a body snippet."""
    if isinstance(data, dict):
        for k in ("error", "message", "msg"):
            if isinstance(data.get(k), str) and data[k]:
                return data[k]
    text = "".join(chr(c) if 32 <= c < 127 else " " for c in raw[:60]).strip()
    return text or "no details"


# ---- validation (nothing is applied until the whole answer passed) -------------------------

def _bad(what):
    raise CheckError("bad answer: " + what)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _section(data, key):
    v = data.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        _bad("%s is not an object" % key)
    return v


def _opt(sec, where, key, ok, kind):
    v = sec.get(key)
    if v is not None and not ok(v):
        _bad("%s.%s is not %s" % (where, key, kind))
    return v


def _is_str(v):
    return isinstance(v, str)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def parse_answer(data, running_version):
    """A Result from the answer's JSON (nothing applied yet); CheckError when it is unusable."""
    if data is _NOT_JSON:
        raise CheckError("answer is not JSON")
    if not isinstance(data, dict):
        raise CheckError("answer is not a JSON object")
    if data.get("success") is False:
        raise CheckError("server refused: %s" % error_text(data, b""))
    r = Result(running_version)

    act = _section(data, "activation")
    if act is not None:
        code = act.get("code")
        if not isinstance(code, str) or not code.strip():
            _bad("activation.code is not a string")
        r.activation = {
            "code": code.strip(),
            "message": _opt(act, "activation", "message", _is_str, "a string") or "",
            "challenge": _opt(act, "activation", "challenge", _is_str, "a string"),
            "timeout_ms": _opt(act, "activation", "timeout_ms", _is_int, "an integer"),
        }

    st = _section(data, "server_time")
    if st is not None:
        ts = st.get("timestamp")
        if not _is_num(ts) or ts <= 0:
            _bad("server_time.timestamp is not a positive number")
        tz = _opt(st, "server_time", "timezone", _is_str, "a string")
        if tz is None:
            tz = _opt(st, "server_time", "timeZone", _is_str, "a string")
        off = _opt(st, "server_time", "timezone_offset", _is_num, "a number")
        r.server_time = {"utc_ms": int(ts), "timezone": tz, "offset_min": off}

    r.mqtt = _section(data, "mqtt")
    ws = _section(data, "websocket")
    if ws is not None:
        _opt(ws, "websocket", "url", _is_str, "a string")
    r.websocket = ws

    fw = _section(data, "firmware")
    if fw is not None:
        if not isinstance(fw.get("version"), str):
            _bad("firmware.version is not a string")
        _opt(fw, "firmware", "url", _is_str, "a string")
        force = fw.get("force")
        if force is not None and force not in (0, 1) and not isinstance(force, bool):
            _bad("firmware.force is not 0/1/true/false")
        _opt(fw, "firmware", "size", _is_int, "an integer")
        _opt(fw, "firmware", "md5", _is_str, "a string")
        _opt(fw, "firmware", "sha256", _is_str, "a string")
        why = delta_offer.problem(fw.get("delta"))
        if why:
            _bad(why)
    r._firmware = fw
    return r


# ---- the firmware decision ------------------------------------------------------------------

def decide(r, settings, retries=install_record.DEFAULT_RETRIES):
    """Fill r.offer / r.firmware_note from the answer's firmware section. retries: how often an
    offer that rolled back before its health check is installed again."""
    fw = r._firmware
    if fw is None:
        r.firmware_note = "no firmware section"
        return
    offered = fw["version"]
    url = fw.get("url")
    force = fw.get("force") in (1, True)
    if not version.is_valid(offered):
        r.firmware_note = "ignored: malformed firmware.version %r" % offered
        _log.warning("%s", r.firmware_note)
        return
    if version.is_valid(r.running_version):
        newer = version.is_newer(offered, r.running_version)
    else:
        newer = False
        _log.warning("running version %r is malformed; only forced offers apply", r.running_version)
    if not newer and not force:  # xiaozhi says "up to date" as the running version, no url
        r.firmware_note = "up to date (running %s, server has %s)" % (r.running_version, offered)
        return
    if not url:
        r.firmware_note = "firmware %s offered without a url" % offered
        return
    # Installed once already: either it runs now (a forced re-install would loop) or it rolled
    # back (installing it again would loop through the bootloader) -- unless it rolled back
    # before it reached its health check (a power cut then): that is retried a few times.
    again = install_record.again(settings, offered, url, r.running_version, retries)
    if again is False:
        r.firmware_note = "firmware %s from this url was installed before; not again" % offered
        _log.warning("%s", r.firmware_note)
        return
    r.offer = {"url": url, "version": offered, "force": force, "size": fw.get("size"),
               "md5": fw.get("md5"), "sha256": fw.get("sha256"), "delta": fw.get("delta")}
    r.firmware_note = again or "%s %s offered (running %s)" % (
        "forced" if force and not newer else "update", offered, r.running_version)


# ---- the check -------------------------------------------------------------------------------

def ota_url(config):
    url = config.get("ota_url")
    if not isinstance(url, str) or not url:
        raise CheckError("no ota_url in config.json", permanent=True)
    return url


def check(board, config, http=None):
    """One OTA check: POST, validate, apply, decide. Returns a Result; raises CheckError."""
    http = http or _http_client
    url = ota_url(config)
    req = sysinfo.ota_request(board, config)
    h = req["headers"]
    running = req["body"]["application"]["version"]
    _log.info("POST %s (Device-Id %s, Client-Id %s, Activation-Version %s, version %s)", url,
              h["Device-Id"], h["Client-Id"], h["Activation-Version"], running)
    global _request_logged
    if not _request_logged:  # the board info, whole, once per boot (re-checks only say POST)
        _request_logged = True
        _log.info("board info: %s", json.dumps(req))
    status, data, raw = post_json(http, url, h, req["body"], config)
    if status != 200:
        raise CheckError("HTTP %d: %s" % (status, error_text(data, raw)), status)
    r = parse_answer(data, running)
    ota_apply.apply(board, r)
    decide(r, board.settings, install_record.retries(config))
    r.headers = h
    _log.info("check ok: %s%s", r.firmware_note,
              "; activation code %s" % r.activation["code"] if r.activation else "")
    return r
