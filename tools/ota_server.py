#!/usr/bin/env python3
"""Local xiaozhi OTA server (CPython + aiohttp) with state a developer or a test can drive.

Endpoints (the OTA prefix is configurable, default ``/xiaozhi/ota/``, trailing slash kept):

``POST {prefix}``            the OTA check (seeds/xiaozhi-ota-protocol.md)
``POST {prefix}activate``    activation v2 (HMAC-SHA256 challenge/response)
``GET  /firmware/<name>``    image download: Content-Length, single Range (206/416), HEAD
``GET  /api/v1/oss/ithings-private/<path>?X-Amz-...``  pre-signed download (403 on bad/expired)
``GET  /``                   a small page listing devices, with a form to "type in" a code
``/admin/...``               JSON admin API (see ``_admin_routes``)

OTA check.  ``Device-Id`` missing -> 400 ``{"error": "Device ID is required"}``; body not JSON,
not an object, ``application``/``board`` missing, or a known field of the wrong type -> 400
``{"error": "Invalid OTA request"}`` (``strict`` also requires every field the spec marks
required: application.version/elf_sha256, board.type/name/ssid/rssi).  Otherwise 200 with
``server_time`` {timestamp ms, timeZone (key configurable), timezone_offset minutes},
``websocket`` {url, token?} (unless disabled), ``mqtt`` when configured, ``firmware``
{version, url, force?, delta?} when an offer exists for ``board.type`` (or the ``"*"`` default;
``set_delta`` adds ``delta`` {from_sha256, url, md5, size}: a patch next to the full url), and
``activation`` {code, message, challenge, timeout_ms} while the device is not activated.

Devices are keyed by ``Device-Id`` (case-insensitive).  A device gets one 6-digit code and one
random challenge; both stay the same across checks (so a rebooted device shows the same code)
until the code expires (``code_ttl``, default 24 h), when a fresh code and challenge replace
them.  ``Activation-Version: 2`` on the latest check makes the device a v2 device.

Activation.  The user "types the code" with ``activate_code(code)`` (or ``POST /admin/activate``
or the form on ``/``); ``auto_activate_s`` does it automatically that many seconds after a code
is issued (for ``make run``).
- v1 device: entering the code activates it; the next check has no ``activation``.
- v2 device: activated once the code was entered AND the device proved its key.
  ``POST {prefix}activate`` is checked in this order:
  ``Device-Id`` missing -> 400 "Device ID is required"; body not a JSON object with string
  ``algorithm``/``serial_number``/``challenge``/``hmac`` -> 400 "Invalid activation request";
  algorithm not ``hmac-sha256`` -> 400 "Unsupported algorithm"; challenge not the device's
  current one (unknown device, expired code) -> 400 "Unknown or expired challenge"; no key
  registered for the serial -> 401 "Unknown serial number"; serial differs from the
  ``Serial-Number`` the device sent on its check -> 401 "Serial number mismatch"; hmac !=
  hex(HMAC-SHA256(key, challenge)) -> 401 "HMAC verification failed".  A correct proof gives
  202 ``{"message": ...}`` while the code has not been entered, 200 once it has (also when a
  retry arrives after activation).

Faults: ``inject(kind, count, endpoint)`` makes the next ``count`` requests to ``endpoint``
("ota", "activate", "firmware"; pre-signed downloads count as "firmware") misbehave; see
``FAULTS``.  Injected faults queue in order.

Use: ``python tools/ota_server.py --port 8002 --firmware-dir build`` (one log line per request),
``python tools/ota_server.py admin activate 123456`` (talks to a running server), or in-process
``srv = run_in_thread(port=0)`` / ``await OtaServer(...).start()``.
"""
import argparse
import asyncio
import hashlib
import hmac
import html
import json
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

from aiohttp import web
from multidict import CIMultiDict

DEFAULT_PREFIX = "/xiaozhi/ota/"
OSS_PREFIX = "/api/v1/oss/ithings-private/"
ERR_DEVICE_ID = "Device ID is required"
ERR_INVALID = "Invalid OTA request"
ERR_500 = "Failed to read device auto_update status"
ERR_ACT_INVALID = "Invalid activation request"
DEFAULT_WEBSOCKET = {"url": "ws://{host}/xiaozhi/v1/"}
_ENTRY = web.RequestKey("ota_entry", dict) if hasattr(web, "RequestKey") else "ota_entry"

# kind -> endpoints it applies to, and what it does.
FAULTS = {
    "error500": ("ota activate firmware", "500 {\"error\": \"Failed to read device auto_update status\"}"),
    "error400": ("ota activate", "400 {\"error\": \"Invalid OTA request\"}"),
    "success_false": ("ota activate", "200 {\"success\": false, \"message\": ...}"),
    "garbage": ("ota activate firmware", "200, Content-Type application/json, body not JSON"),
    "not_object": ("ota activate", "200 with a JSON array"),
    "wrong_types": ("ota", "200 with every section of the wrong type"),
    "stall": ("ota activate firmware", "accept, say nothing for `seconds` (default stall_s), then answer"),
    "stall_mid": ("ota activate firmware", "send headers and half the body, then stall"),
    "disconnect": ("ota activate firmware", "close the connection without an answer"),
    "truncate": ("ota activate firmware", "full Content-Length, half the body, then close"),
    "chunked": ("ota activate firmware", "normal answer, chunked transfer (no Content-Length)"),
    "corrupt": ("firmware", "normal answer with one byte flipped in the middle"),
    "redirect": ("ota activate firmware", "307 to the same URL, relative Location (each hop uses one)"),
    "redirect_abs": ("ota activate firmware", "307 to the same URL, absolute Location"),
}
FAULT_ALIASES = {"500": "error500", "400": "error400"}
ENDPOINTS = ("ota", "activate", "firmware")

# Known body fields and their types (checked whenever present).
_STR, _INT, _NUM, _OBJ, _LIST = "str", "int", "num", "obj", "list"
_BODY_TYPES = {
    "version": _INT, "uuid": _STR, "language": _STR, "mac_address": _STR, "chip_model_name": _STR,
    "flash_size": _INT, "psram_size": _INT, "minimum_free_heap_size": _INT, "chip_info": _OBJ,
    "application": _OBJ, "ota": _OBJ, "board": _OBJ, "partition_table": _LIST,
}
_APP_TYPES = {"name": _STR, "version": _STR, "compile_time": _STR, "idf_version": _STR, "elf_sha256": _STR}
_BOARD_TYPES = {"type": _STR, "name": _STR, "ssid": _STR, "rssi": _NUM, "channel": _INT, "ip": _STR, "mac": _STR}
_CHIP_TYPES = {"model": _INT, "cores": _INT, "revision": _INT, "features": _INT}
_PART_TYPES = {"label": _STR, "type": _INT, "subtype": _INT, "address": _INT, "size": _INT}
_APP_REQUIRED = ("version",)
_BOARD_REQUIRED = ("type",)
_APP_STRICT = ("version", "elf_sha256")
_BOARD_STRICT = ("type", "name", "ssid", "rssi")


def _type_ok(value, kind):
    if kind == _STR:
        return isinstance(value, str)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _OBJ:
        return isinstance(value, dict)
    return isinstance(value, list)


def _check_fields(obj, types, required, where):
    for name in required:
        if name not in obj:
            return "%s%s missing" % (where, name)
    for name, kind in types.items():
        if name in obj and not _type_ok(obj[name], kind):
            return "%s%s must be %s" % (where, name, kind)
    return None


def validate_ota_body(body, strict=True):
    """Return None when `body` (decoded JSON) is a valid OTA request, else a short reason."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    for name in ("application", "board"):
        if name not in body:
            return name + " missing"
    err = _check_fields(body, _BODY_TYPES, (), "")
    err = err or _check_fields(body["application"], _APP_TYPES,
                               _APP_STRICT if strict else _APP_REQUIRED, "application.")
    err = err or _check_fields(body["board"], _BOARD_TYPES,
                               _BOARD_STRICT if strict else _BOARD_REQUIRED, "board.")
    if err:
        return err
    if "chip_info" in body:
        err = _check_fields(body["chip_info"], _CHIP_TYPES, (), "chip_info.")
    if not err and "ota" in body and "label" in body["ota"] and not isinstance(body["ota"]["label"], str):
        err = "ota.label must be str"
    for i, part in enumerate(body.get("partition_table", ())):
        if err:
            break
        if not isinstance(part, dict):
            err = "partition_table[%d] must be obj" % i
        else:
            err = _check_fields(part, _PART_TYPES, tuple(_PART_TYPES), "partition_table[%d]." % i)
    return err


def hmac_hex(key, challenge):
    """hex(HMAC-SHA256(key, challenge)) -- what a v2 device must send."""
    if isinstance(challenge, str):
        challenge = challenge.encode()
    return hmac.new(bytes(key), challenge, hashlib.sha256).hexdigest()


# ---- pre-signed URLs ---------------------------------------------------------------------------

def _amz_date(now):
    return datetime.fromtimestamp(int(now), timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _presign_mac(secret, raw_path, unsigned_query):
    msg = "GET\n%s\n%s" % (raw_path, unsigned_query)
    return hmac.new(secret, msg.encode(), hashlib.sha256).hexdigest()


def presign(path, expires_s, secret, now=None, access_key="ithings"):
    """Relative pre-signed URL for `path` (inside the firmware store), valid `expires_s` seconds.

    The signature covers the raw path and the raw query string (minus the signature), so a
    client that re-encodes the URL (e.g. the ``%2F`` in X-Amz-Credential) is refused.
    """
    now = time.time() if now is None else now
    raw_path = OSS_PREFIX + urllib.parse.quote(path.lstrip("/"), safe="/-_.~")
    date = _amz_date(now)
    cred = urllib.parse.quote("%s/%s/us-east-1/s3/aws4_request" % (access_key, date[:8]), safe="")
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=%s&X-Amz-Date=%s"
             "&X-Amz-Expires=%d&X-Amz-SignedHeaders=host" % (cred, date, int(expires_s)))
    sig = _presign_mac(secret, raw_path, query)
    return "%s?%s&X-Amz-Signature=%s" % (raw_path, query, sig)


def check_presigned(raw_path_and_query, secret, now):
    """None when the raw request target carries a valid, unexpired signature, else a reason."""
    path, _, query = raw_path_and_query.partition("?")
    parts = query.split("&") if query else []
    sig = None
    kept = []
    for part in parts:
        if part.startswith("X-Amz-Signature="):
            sig = part[len("X-Amz-Signature="):]
        else:
            kept.append(part)
    if not sig:
        return "Missing signature"
    want = _presign_mac(secret, path, "&".join(kept))
    if not hmac.compare_digest(sig.lower(), want):
        return "SignatureDoesNotMatch"
    fields = dict(p.partition("=")[::2] for p in kept)
    try:
        issued = datetime.strptime(fields["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        expires = int(fields["X-Amz-Expires"])
    except (KeyError, ValueError):
        return "Malformed query"
    if now > issued.timestamp() + expires:
        return "Request has expired"
    return None


def parse_range(header, size):
    """(start, length) for a single `bytes=` range, None when there is no header, or "bad"."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return "bad"
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return "bad"
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "bad"
            start = max(0, size - n)
            end = size - 1
        else:
            start = int(first)
            end = int(last) if last != "" else size - 1
            if start < 0 or end < start:
                return "bad"
            end = min(end, size - 1)
    except ValueError:
        return "bad"
    if start >= size:
        return "bad"
    return start, end - start + 1


class _Blob:
    """A download body: in-memory bytes or a file; read in slices."""

    def __init__(self, data=None, path=None):
        self.data = data
        self.path = path
        self.size = len(data) if data is not None else os.path.getsize(path)

    def slices(self, start, length, piece):
        if self.data is not None:
            view = memoryview(self.data)
            end = start + length
            while start < end:
                yield bytes(view[start:min(end, start + piece)])
                start += piece
            return
        with open(self.path, "rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(piece, length))
                if not chunk:
                    return
                length -= len(chunk)
                yield chunk


def _fill(template, values):
    """Replace {name} placeholders in strings (recursively); unknown braces stay as they are."""
    if isinstance(template, str):
        for name, value in values.items():
            template = template.replace("{%s}" % name, value)
        return template
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    return template


def _jbytes(obj):
    return json.dumps(obj).encode()


class OtaServer:
    """The server; admin methods are thread-safe and usable while it runs in another thread."""

    def __init__(self, host="127.0.0.1", port=8002, prefix=DEFAULT_PREFIX, firmware_dir=None,
                 code_ttl=24 * 3600, activation_timeout_ms=30000, auto_activate_s=None,
                 mqtt=None, websocket=DEFAULT_WEBSOCKET, timezone_name="Asia/Shanghai",
                 timezone_offset=480, tz_key="timeZone", strict=True, public_url=None,
                 admin_url=None, presign_secret=None, clock=time.time, stall_s=30.0,
                 ssl_context=None, log=None):
        if not prefix.startswith("/"):
            prefix = "/" + prefix
        self.host = host
        self.port = port
        self.prefix = prefix
        self.firmware_dir = os.path.abspath(firmware_dir) if firmware_dir else None
        self.code_ttl = code_ttl
        self.activation_timeout_ms = activation_timeout_ms
        self.auto_activate_s = auto_activate_s
        self.mqtt = mqtt
        self.websocket = websocket
        self.timezone_name = timezone_name
        self.timezone_offset = timezone_offset
        self.tz_key = tz_key
        self.strict = strict
        self.public_url = public_url.rstrip("/") if public_url else None
        self.admin_url = admin_url
        self.presign_secret = presign_secret or secrets.token_bytes(32)
        self.clock = clock
        self.stall_s = stall_s
        self.ssl_context = ssl_context
        self.log = log
        self.requests = []          # every protocol request: see _record
        self._lock = threading.RLock()
        self._devices = {}          # DEVICE-ID (upper) -> dict
        self._codes = {}            # code -> device key
        self._keys = {}             # serial -> HMAC key bytes
        self._offers = {}           # board type ("*" = any) -> {version, src, force}
        self._images = {}           # name -> _Blob registered in memory / by path
        self._faults = {e: [] for e in ENDPOINTS}
        self._runner = None
        self._stopping = None

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def url(self):
        scheme = "https" if self.ssl_context else "http"
        return "%s://%s:%d" % (scheme, self.host, self.port)

    @property
    def ota_url(self):
        return self.url + self.prefix

    @web.middleware
    async def _log_others(self, request, handler):
        """One log line also for requests the protocol handlers do not log (admin, 404s)."""
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            if _ENTRY not in request:
                self._say("%s %s %s %s" % (request.method, request.raw_path, status,
                                            request.headers.get("Device-Id", "-")))

    def make_app(self):
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._log_others])
        r = app.router
        r.add_post(self.prefix, self._h_ota)
        r.add_post(self.prefix + "activate", self._h_activate)
        r.add_get("/firmware/{name:.+}", self._h_firmware)
        r.add_get(OSS_PREFIX + "{path:.+}", self._h_oss)
        r.add_get("/", self._h_index)
        self._admin_routes(r)
        return app

    async def start(self):
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _say(self, line):
        if self.log:
            self.log(line)

    # ---- admin API (functions) -------------------------------------------------------------

    def devices(self):
        """Copies of every device record."""
        with self._lock:
            now = self.clock()
            for dev in self._devices.values():
                self._auto_confirm(dev, now)
            return [dict(d) for d in self._devices.values()]

    def device(self, device_id):
        with self._lock:
            dev = self._devices.get(device_id.strip().upper())
            return dict(dev) if dev else None

    def activate_code(self, code):
        """The user typed `code`: returns the device record, or None for an unknown/expired code."""
        with self._lock:
            key = self._codes.get(str(code).strip())
            dev = self._devices.get(key) if key else None
            if dev is None or self.clock() >= dev["code_expires"]:
                return None
            self._confirm(dev, "code entered")
            return dict(dev)

    def deactivate(self, device_id):
        """Forget a device's activation (it gets a code again on its next check)."""
        with self._lock:
            dev = self._devices.get(device_id.strip().upper())
            if dev is None:
                return False
            self._codes.pop(dev["code"], None)
            dev.update(activated=False, confirmed=False, hmac_verified=False, code=None,
                       code_issued=None, code_expires=0, challenge=None)
            return True

    def register_hmac_key(self, serial, key_bytes):
        with self._lock:
            self._keys[str(serial)] = bytes(key_bytes)

    def register_image(self, name, data_or_path):
        """Serve bytes (or a file at a path) as /firmware/<name>."""
        with self._lock:
            if isinstance(data_or_path, (bytes, bytearray, memoryview)):
                self._images[name] = _Blob(data=bytes(data_or_path))
            else:
                self._images[name] = _Blob(path=os.path.abspath(data_or_path))

    def set_offer(self, board_type, version, url_or_path, force=False):
        """Offer `version` to boards of `board_type` ("*" = any board without its own offer).

        `url_or_path`: bytes (served from memory), an http(s) URL (sent verbatim), a path
        starting with "/" that is not a file (relative to this server, e.g. a presigned URL),
        an existing file (served as /firmware/<basename>), or a name in the firmware folder.
        """
        if isinstance(url_or_path, (bytes, bytearray, memoryview)):
            name = "%s-%s.bin" % (board_type.replace("*", "any"), version)
            self.register_image(name, url_or_path)
            src = "/firmware/" + name
        elif url_or_path.startswith(("http://", "https://")):
            src = url_or_path
        elif os.path.isfile(url_or_path) and self._in_dir(url_or_path):
            name = os.path.relpath(os.path.abspath(url_or_path), self.firmware_dir)
            src = "/firmware/" + urllib.parse.quote(name.replace(os.sep, "/"))
        elif os.path.isfile(url_or_path):
            name = os.path.basename(url_or_path)
            self.register_image(name, url_or_path)
            src = "/firmware/" + urllib.parse.quote(name)
        elif url_or_path.startswith("/"):
            src = url_or_path
        else:
            src = "/firmware/" + urllib.parse.quote(url_or_path)
        with self._lock:
            self._offers[board_type] = {"version": str(version), "src": src, "force": force}

    def set_delta(self, board_type, from_sha256, patch):
        """Offer `patch` (bytes: tools/make_delta.py's file) for devices running the image whose
        SHA-256 is `from_sha256`, next to `board_type`'s full offer (firmware.delta)."""
        name = "%s-%s.patch" % (board_type.replace("*", "any"), from_sha256[:16])
        self.register_image(name, patch)
        with self._lock:
            self._offers[board_type]["delta"] = {
                "from_sha256": from_sha256, "src": "/firmware/" + name,
                "md5": hashlib.md5(patch).hexdigest(), "size": len(patch)}

    def clear_offer(self, board_type):
        with self._lock:
            self._offers.pop(board_type, None)

    def set_mqtt(self, config):
        """`config` {endpoint "host:port", client_id, username, password, publish_topic?,
        subscribe_topic?} or None.  Strings may use {device_id} {mac} {client_id} {serial}
        {board_type}."""
        with self._lock:
            self.mqtt = dict(config) if config else None

    def set_websocket(self, config):
        """`config` {url, token?} (strings may use {host} and the mqtt placeholders) or None."""
        with self._lock:
            self.websocket = dict(config) if config else None

    def inject(self, kind, count=1, endpoint="ota", seconds=None):
        """Make the next `count` requests to `endpoint` misbehave as `kind` (see FAULTS)."""
        kind = FAULT_ALIASES.get(kind, kind)
        if kind not in FAULTS:
            raise ValueError("unknown fault %r (known: %s)" % (kind, ", ".join(sorted(FAULTS))))
        if endpoint not in FAULTS[kind][0].split():
            raise ValueError("fault %r does not apply to %r" % (kind, endpoint))
        with self._lock:
            self._faults[endpoint].append([kind, int(count), seconds])

    def clear_faults(self):
        with self._lock:
            for queue in self._faults.values():
                del queue[:]

    def presign(self, path, expires_s=3600):
        """Relative pre-signed URL for `path` in the firmware store (see module `presign`)."""
        return presign(path, expires_s, self.presign_secret, now=self.clock())

    def clear_requests(self):
        del self.requests[:]

    # ---- state machine ----------------------------------------------------------------------

    def _in_dir(self, path):
        if not self.firmware_dir:
            return False
        full = os.path.abspath(path)
        return full.startswith(self.firmware_dir + os.sep)

    def _take_fault(self, endpoint):
        with self._lock:
            queue = self._faults[endpoint]
            while queue:
                item = queue[0]
                if item[1] > 0:
                    item[1] -= 1
                    if item[1] == 0:
                        queue.pop(0)
                    return item[0], item[2]
                queue.pop(0)
        return None, None

    def _device(self, dev_id, now):
        key = dev_id.strip().upper()
        dev = self._devices.get(key)
        if dev is None:
            dev = self._devices[key] = {
                "device_id": dev_id.strip(), "client_id": None, "activation_version": None,
                "serial": None, "board_type": None, "app_version": None, "user_agent": None,
                "code": None, "code_issued": None, "code_expires": 0, "challenge": None,
                "confirmed": False, "hmac_verified": False, "activated": False,
                "first_seen": now, "last_seen": now, "checks": 0}
        return dev

    def _ensure_code(self, dev, now):
        if dev["code"] and now < dev["code_expires"]:
            return
        if dev["code"]:
            self._codes.pop(dev["code"], None)
            self._say("code %s for %s expired" % (dev["code"], dev["device_id"]))
        code = "%06d" % secrets.randbelow(1000000)
        while code in self._codes:
            code = "%06d" % secrets.randbelow(1000000)
        self._codes[code] = dev["device_id"].upper()
        dev.update(code=code, code_issued=now, code_expires=now + self.code_ttl,
                   challenge=secrets.token_hex(16))
        self._say("code %s issued for %s (v%s, expires in %d s)"
                  % (code, dev["device_id"], dev["activation_version"] or "1", self.code_ttl))

    def _auto_confirm(self, dev, now):
        if (self.auto_activate_s is not None and not dev["confirmed"] and dev["code"]
                and now < dev["code_expires"] and now >= dev["code_issued"] + self.auto_activate_s):
            self._confirm(dev, "auto")

    def _confirm(self, dev, how):
        dev["confirmed"] = True
        self._say("code %s confirmed for %s (%s)" % (dev["code"], dev["device_id"], how))
        self._maybe_activate(dev)

    def _maybe_activate(self, dev):
        if dev["activated"] or not dev["confirmed"]:
            return
        if dev["activation_version"] == "2" and not dev["hmac_verified"]:
            return
        dev["activated"] = True
        self._codes.pop(dev["code"], None)
        dev["code"] = None
        self._say("device %s activated (v%s)" % (dev["device_id"], dev["activation_version"] or "1"))

    def ota_reply(self, headers, raw, base):
        """(status, JSON object, reason) for an OTA check; `headers` case-insensitive mapping."""
        dev_id = (headers.get("Device-Id") or "").strip()
        if not dev_id:
            return 400, {"error": ERR_DEVICE_ID}, "no Device-Id"
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"error": ERR_INVALID}, "body is not JSON"
        reason = validate_ota_body(body, self.strict)
        if reason:
            return 400, {"error": ERR_INVALID}, reason
        with self._lock:
            now = self.clock()
            dev = self._device(dev_id, now)
            dev.update(client_id=headers.get("Client-Id"), user_agent=headers.get("User-Agent"),
                       activation_version=(headers.get("Activation-Version") or "1").strip(),
                       board_type=body["board"].get("type"),
                       app_version=body["application"].get("version"), last_seen=now,
                       checks=dev["checks"] + 1)
            if headers.get("Serial-Number"):
                dev["serial"] = headers.get("Serial-Number")
            self._auto_confirm(dev, now)
            reply = {"server_time": {"timestamp": int(now * 1000), self.tz_key: self.timezone_name,
                                     "timezone_offset": self.timezone_offset}}
            values = {"host": base.split("://", 1)[-1], "device_id": dev["device_id"],
                      "mac": dev["device_id"].replace(":", "").lower(),
                      "client_id": dev["client_id"] or "", "serial": dev["serial"] or "",
                      "board_type": dev["board_type"] or ""}
            if not dev["activated"]:
                self._ensure_code(dev, now)
                reply["activation"] = {
                    "code": dev["code"], "challenge": dev["challenge"],
                    "message": "%s\n%s" % (self.admin_url or base, dev["code"]),
                    "timeout_ms": self.activation_timeout_ms}
            if self.mqtt:
                reply["mqtt"] = _fill(self.mqtt, values)
            if self.websocket:
                reply["websocket"] = _fill(self.websocket, values)
            offer = self._offers.get(dev["board_type"]) or self._offers.get("*")
            if offer:
                src = offer["src"]
                url = src if src.startswith(("http://", "https://")) else base + src
                reply["firmware"] = {"version": offer["version"], "url": url}
                if offer["force"]:
                    reply["firmware"]["force"] = 1 if offer["force"] is True else offer["force"]
                if offer.get("delta"):
                    d = dict(offer["delta"])
                    d["url"] = base + d.pop("src")
                    reply["firmware"]["delta"] = d
        return 200, reply, None

    def activate_reply(self, headers, raw):
        """(status, JSON object, reason) for a v2 activation POST."""
        dev_id = (headers.get("Device-Id") or "").strip()
        if not dev_id:
            return 400, {"error": ERR_DEVICE_ID}, "no Device-Id"
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        fields = ("algorithm", "serial_number", "challenge", "hmac")
        if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields):
            return 400, {"error": ERR_ACT_INVALID}, "bad body"
        if body["algorithm"] != "hmac-sha256":
            return 400, {"error": "Unsupported algorithm"}, body["algorithm"]
        with self._lock:
            now = self.clock()
            dev = self._devices.get(dev_id.upper())
            if dev is None or not dev["challenge"] or dev["challenge"] != body["challenge"] or (
                    not dev["activated"] and now >= dev["code_expires"]):
                return 400, {"error": "Unknown or expired challenge"}, None
            key = self._keys.get(body["serial_number"])
            if key is None:
                return 401, {"error": "Unknown serial number"}, body["serial_number"]
            if dev["serial"] and dev["serial"] != body["serial_number"]:
                return 401, {"error": "Serial number mismatch"}, None
            if not hmac.compare_digest(body["hmac"].lower(), hmac_hex(key, body["challenge"])):
                return 401, {"error": "HMAC verification failed"}, None
            dev["serial"] = body["serial_number"]
            if not dev["hmac_verified"]:
                dev["hmac_verified"] = True
                self._say("HMAC verified for %s (serial %s)" % (dev["device_id"], dev["serial"]))
            self._auto_confirm(dev, now)
            self._maybe_activate(dev)
            if dev["activated"]:
                return 200, {"message": "Device activated"}, None
            return 202, {"message": "Waiting for the activation code to be entered"}, None

    def _lookup_blob(self, name):
        with self._lock:
            blob = self._images.get(name)
        if blob is not None or not self.firmware_dir:
            return blob
        full = os.path.abspath(os.path.join(self.firmware_dir, name))
        if not full.startswith(self.firmware_dir + os.sep) or not os.path.isfile(full):
            return None
        return _Blob(path=full)

    # ---- HTTP plumbing ----------------------------------------------------------------------

    def _base(self, request):
        if self.public_url:
            return self.public_url
        return "%s://%s" % (request.scheme, request.host)

    def _record(self, request, endpoint, raw):
        entry = {"time": self.clock(), "endpoint": endpoint, "method": request.method,
                 "path": request.path, "raw_path": request.raw_path, "headers": CIMultiDict(request.headers),
                 "body": raw, "json": None, "status": None, "device_id": request.headers.get("Device-Id"),
                 "fault": None, "reason": None}
        if raw:
            try:
                entry["json"] = json.loads(raw)
            except ValueError:
                pass
        self.requests.append(entry)
        request[_ENTRY] = entry
        return entry

    def _done(self, entry, status, reason=None):
        entry["status"] = status
        entry["reason"] = reason
        extra = ""
        if entry["fault"]:
            extra += " [fault %s]" % entry["fault"]
        if reason:
            extra += " (%s)" % reason
        self._say("%s %s %s %s%s" % (entry["method"], entry["raw_path"], status,
                                      entry["device_id"] or "-", extra))

    async def _sleep(self, seconds):
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _pre_fault(self, request, endpoint, entry):
        """Apply the next injected fault; returns a response (or False for 'closed'), or the
        shaping mode for the normal answer ('chunked', 'truncate', ...) as a str, or None."""
        kind, seconds = self._take_fault(endpoint)
        if kind is None:
            return None
        entry["fault"] = kind
        if kind == "stall":
            await self._sleep(self.stall_s if seconds is None else seconds)
            return None
        if kind in ("chunked", "truncate", "corrupt", "stall_mid"):
            return kind + (":%s" % seconds if seconds is not None else "")
        if kind == "disconnect":
            request.transport.close()
            self._done(entry, 0, "closed without answer")
            return web.Response()
        if kind in ("redirect", "redirect_abs"):
            loc = request.raw_path if kind == "redirect" else self._base(request) + request.raw_path
            self._done(entry, 307, "-> " + loc)
            return web.Response(status=307, headers={"Location": loc})
        if kind == "error500":
            status, body = 500, _jbytes({"error": ERR_500})
        elif kind == "error400":
            status, body = 400, _jbytes({"error": ERR_INVALID})
        elif kind == "success_false":
            status, body = 200, _jbytes({"success": False, "message": "Device is not allowed (injected)"})
        elif kind == "not_object":
            status, body = 200, _jbytes(["server_time", 1752119934489])
        elif kind == "wrong_types":
            status, body = 200, _jbytes({
                "server_time": "1752119934489", "mqtt": "broker:1883", "websocket": ["ws://x/"],
                "activation": {"code": 608303, "message": None}, "firmware": {"version": 2, "url": 7}})
        else:  # garbage
            status, body = 200, b"<html><body>502 Bad Gateway</body></html>\x00\xff{\"server_time\""
        self._done(entry, status)
        return web.Response(status=status, body=body, content_type="application/json")

    async def _send(self, request, status, blob, start, length, headers, mode):
        """Stream `length` bytes of `blob` from `start`, shaped by an injected `mode`."""
        seconds = None
        if mode and ":" in mode:
            mode, seconds = mode.split(":", 1)
            seconds = float(seconds)
        resp = web.StreamResponse(status=status, headers=headers)
        if mode == "chunked":
            resp.enable_chunked_encoding()
        else:
            resp.content_length = length
        await resp.prepare(request)
        if request.method == "HEAD":
            await resp.write_eof()
            return resp
        limit = length // 2 if mode in ("truncate", "stall_mid") else length
        piece = max(1, min(16384, length // 5 + 1)) if mode == "chunked" else 65536
        sent = 0
        flip = length // 2
        for chunk in blob.slices(start, limit, piece):
            if mode == "corrupt" and sent <= flip < sent + len(chunk):
                chunk = bytearray(chunk)
                chunk[flip - sent] ^= 0xFF
                chunk = bytes(chunk)
            await resp.write(chunk)
            sent += len(chunk)
        if mode == "stall_mid":
            await self._sleep(self.stall_s if seconds is None else seconds)
        if mode in ("truncate", "stall_mid"):
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    async def _json_endpoint(self, request, endpoint, compute):
        raw = await request.read()
        entry = self._record(request, endpoint, raw)
        pre = await self._pre_fault(request, endpoint, entry)
        if isinstance(pre, web.StreamResponse):
            return pre
        status, obj, reason = compute(request.headers, raw)
        self._done(entry, status, reason)
        body = _jbytes(obj)
        return await self._send(request, status, _Blob(data=body), 0, len(body),
                                {"Content-Type": "application/json"}, pre)

    async def _h_ota(self, request):
        base = self._base(request)
        return await self._json_endpoint(request, "ota", lambda h, raw: self.ota_reply(h, raw, base))

    async def _h_activate(self, request):
        return await self._json_endpoint(request, "activate", self.activate_reply)

    async def _serve_blob(self, request, name, entry):
        pre = await self._pre_fault(request, "firmware", entry)
        if isinstance(pre, web.StreamResponse):
            return pre
        blob = self._lookup_blob(name)
        if blob is None:
            self._done(entry, 404)
            return web.json_response({"error": "Not found"}, status=404)
        ctype = "application/gzip" if name.endswith(".gz") else "application/octet-stream"
        headers = {"Content-Type": ctype, "Accept-Ranges": "bytes"}
        rng = parse_range(request.headers.get("Range"), blob.size)
        if rng == "bad":
            self._done(entry, 416, request.headers.get("Range"))
            return web.Response(status=416, headers={"Content-Range": "bytes */%d" % blob.size})
        status, start, length = 200, 0, blob.size
        if rng is not None:
            start, length = rng
            status = 206
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, start + length - 1, blob.size)
        self._done(entry, status)
        return await self._send(request, status, blob, start, length, headers, pre)

    async def _h_firmware(self, request):
        entry = self._record(request, "firmware", b"")
        return await self._serve_blob(request, request.match_info["name"], entry)

    async def _h_oss(self, request):
        entry = self._record(request, "firmware", b"")
        reason = check_presigned(request.raw_path, self.presign_secret, self.clock())
        if reason:
            self._done(entry, 403, reason)
            body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
                    "<Message>%s</Message></Error>" % reason)
            return web.Response(status=403, text=body, content_type="application/xml")
        return await self._serve_blob(request, request.match_info["path"], entry)

    # ---- admin over HTTP --------------------------------------------------------------------

    def _admin_routes(self, r):
        r.add_get("/admin/devices", self._a_devices)
        r.add_get("/admin/requests", self._a_requests)
        r.add_post("/admin/activate", self._a_activate)
        r.add_post("/admin/deactivate", self._a_deactivate)
        r.add_post("/admin/hmac_key", self._a_hmac_key)
        r.add_post("/admin/offer", self._a_offer)
        r.add_post("/admin/image", self._a_image)
        r.add_post("/admin/mqtt", self._a_mqtt)
        r.add_post("/admin/websocket", self._a_websocket)
        r.add_post("/admin/inject", self._a_inject)
        r.add_post("/admin/presign", self._a_presign)

    @staticmethod
    async def _admin_body(request):
        if request.content_type == "application/x-www-form-urlencoded":
            return dict(await request.post())
        raw = await request.read()
        return json.loads(raw) if raw.strip() else None

    def _admin(handler):  # noqa: N805 -- decorator used inside the class body
        async def wrapped(self, request):
            try:
                body = await self._admin_body(request)
                result = handler(self, request, body)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return web.json_response({"error": "%s: %s" % (type(e).__name__, e)}, status=400)
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response(result)
        return wrapped

    @_admin
    def _a_devices(self, request, body):
        return {"devices": self.devices()}

    @_admin
    def _a_requests(self, request, body):
        out = []
        for e in self.requests[-200:]:
            e = dict(e)
            e["body"] = e["body"].decode("utf-8", "replace")
            e["headers"] = dict(e["headers"])
            out.append(e)
        return {"requests": out}

    @_admin
    def _a_activate(self, request, body):
        dev = self.activate_code(body["code"])
        if dev is None:
            return web.json_response({"error": "Unknown or expired code"}, status=404)
        if request.content_type == "application/x-www-form-urlencoded":
            raise web.HTTPSeeOther("/")
        return {"device": dev}

    @_admin
    def _a_deactivate(self, request, body):
        if not self.deactivate(body["device_id"]):
            return web.json_response({"error": "Unknown device"}, status=404)
        return {"ok": True}

    @_admin
    def _a_hmac_key(self, request, body):
        self.register_hmac_key(body["serial"], bytes.fromhex(body["key"]))
        return {"ok": True}

    @_admin
    def _a_offer(self, request, body):
        if body.get("version") is None:
            self.clear_offer(body["board_type"])
        else:
            self.set_offer(body["board_type"], body["version"], body.get("url") or body["path"],
                           body.get("force", False))
        return {"ok": True}

    async def _a_image(self, request):
        name = request.query.get("name")
        if not name:
            return web.json_response({"error": "name query parameter required"}, status=400)
        self.register_image(name, await request.read())
        return web.json_response({"ok": True, "path": "/firmware/" + name})

    @_admin
    def _a_mqtt(self, request, body):
        self.set_mqtt(body)
        return {"ok": True}

    @_admin
    def _a_websocket(self, request, body):
        self.set_websocket(body)
        return {"ok": True}

    @_admin
    def _a_inject(self, request, body):
        self.inject(body["kind"], int(body.get("count", 1)), body.get("endpoint", "ota"), body.get("seconds"))
        return {"ok": True}

    @_admin
    def _a_presign(self, request, body):
        rel = self.presign(body["path"], int(body.get("expires", 3600)))
        return {"url": rel, "absolute": self._base(request) + rel}

    async def _h_index(self, request):
        rows = []
        for d in self.devices():
            state = "activated" if d["activated"] else ("confirmed, waiting for HMAC" if d["confirmed"]
                                                        else "code %s" % d["code"])
            rows.append("<tr><td>%s</td><td>v%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % tuple(
                html.escape(str(x)) for x in (d["device_id"], d["activation_version"] or "1",
                                              d["board_type"], d["app_version"], state)))
        page = ("<!doctype html><title>OTA server</title><h1>Devices</h1><table border=1>"
                "<tr><th>Device-Id</th><th>activation</th><th>board</th><th>version</th><th>state</th></tr>"
                "%s</table><h2>Enter an activation code</h2><form method=post action=/admin/activate>"
                "<input name=code maxlength=6 autofocus> <button>Activate</button></form>") % "".join(rows)
        return web.Response(text=page, content_type="text/html")

    del _admin


# ---- running in a thread (tests, run_sim) ---------------------------------------------------

class ServerThread:
    """An OtaServer on its own event loop in a daemon thread; attributes fall through to it."""

    def __init__(self, server):
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="ota-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error

    def _run(self):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as e:  # surfaced to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def __getattr__(self, name):
        return getattr(self.server, name)

    def stop(self):
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def run_in_thread(**opts):
    """Start an OtaServer (same keyword options; port=0 picks a free port) in a thread."""
    opts.setdefault("port", 0)
    return ServerThread(OtaServer(**opts))


# ---- command line ---------------------------------------------------------------------------

def _parse_offer(text):
    """BOARD=VERSION:SRC[,force] -> (board, version, src, force)."""
    board, eq, rest = text.partition("=")
    version, colon, src = rest.partition(":")
    if not (eq and colon and board and version and src):
        raise argparse.ArgumentTypeError("offer must be BOARD=VERSION:SRC[,force]: %r" % text)
    force = src.endswith(",force")
    if force:
        src = src[:-len(",force")]
    return board, version, src, force


def _parse_key(text):
    serial, eq, key = text.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError("hmac key must be SERIAL=HEX")
    return serial, bytes.fromhex(key)


def build_parser():
    p = argparse.ArgumentParser(description="Local xiaozhi OTA server (see the module docstring).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8002)
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="OTA path (default %(default)s)")
    p.add_argument("--firmware-dir", help="folder served under /firmware/ and the OSS path")
    p.add_argument("--offer", action="append", type=_parse_offer, default=[],
                   metavar="BOARD=VERSION:SRC[,force]", help="firmware offer per board type ('*' = any)")
    p.add_argument("--delta", action="append", default=[], metavar="BOARD=BASE.bin",
                   help="also offer a patch from BASE.bin to BOARD's offered image file")
    p.add_argument("--hmac-key", action="append", type=_parse_key, default=[], metavar="SERIAL=HEX")
    p.add_argument("--code-ttl", type=float, default=24 * 3600, help="activation code lifetime, s")
    p.add_argument("--auto-activate", type=float, metavar="SECONDS",
                   help="enter each code automatically this long after it is issued")
    p.add_argument("--activation-timeout-ms", type=int, default=30000)
    p.add_argument("--mqtt-endpoint", help="host:port; enables the mqtt section")
    p.add_argument("--mqtt-client-id", default="{device_id}")
    p.add_argument("--mqtt-username", default="")
    p.add_argument("--mqtt-password", default="")
    p.add_argument("--mqtt-publish-topic")
    p.add_argument("--mqtt-subscribe-topic")
    p.add_argument("--websocket-url", default=DEFAULT_WEBSOCKET["url"])
    p.add_argument("--websocket-token")
    p.add_argument("--no-websocket", action="store_true")
    p.add_argument("--timezone", default="Asia/Shanghai")
    p.add_argument("--timezone-offset", type=int, default=480, help="minutes")
    p.add_argument("--tz-key", default="timeZone", choices=("timeZone", "timezone"))
    p.add_argument("--lenient", action="store_true", help="only application.version and board.type required")
    p.add_argument("--public-url", help="base URL put into answers (default: from the Host header)")
    p.add_argument("--cert", help="PEM certificate chain: serve HTTPS")
    p.add_argument("--key", help="PEM private key for --cert")
    p.add_argument("--stall", type=float, default=30.0, help="seconds an injected stall lasts")
    return p


def options_from_args(args):
    mqtt = None
    if args.mqtt_endpoint:
        mqtt = {"endpoint": args.mqtt_endpoint, "client_id": args.mqtt_client_id,
                "username": args.mqtt_username, "password": args.mqtt_password}
        if args.mqtt_publish_topic:
            mqtt["publish_topic"] = args.mqtt_publish_topic
        if args.mqtt_subscribe_topic:
            mqtt["subscribe_topic"] = args.mqtt_subscribe_topic
    websocket = None
    if not args.no_websocket:
        websocket = {"url": args.websocket_url}
        if args.websocket_token:
            websocket["token"] = args.websocket_token
    ssl_context = None
    if args.cert:
        import ssl
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.cert, args.key)
    return dict(host=args.host, port=args.port, prefix=args.prefix, firmware_dir=args.firmware_dir,
                code_ttl=args.code_ttl, auto_activate_s=args.auto_activate,
                activation_timeout_ms=args.activation_timeout_ms, mqtt=mqtt, websocket=websocket,
                timezone_name=args.timezone, timezone_offset=args.timezone_offset, tz_key=args.tz_key,
                strict=not args.lenient, public_url=args.public_url, ssl_context=ssl_context,
                stall_s=args.stall)


def configure(server, args):
    for serial, key in args.hmac_key:
        server.register_hmac_key(serial, key)
    for board, version, src, force in args.offer:
        server.set_offer(board, version, src, force)
        if not src.startswith(("http://", "https://", "/")) and server._lookup_blob(src) is None \
                and not os.path.isfile(src):
            print("warning: offer %s: %s not found (downloads will 404)" % (board, src), flush=True)
    for board, _, base in (d.partition("=") for d in args.delta):
        import make_delta  # detools: only when a delta is offered
        new = [o[2] for o in args.offer if o[0] == board]
        if not new or not os.path.isfile(new[-1]):
            raise SystemExit("--delta %s: no offer of an image file for that board" % board)
        server.set_delta(board, *make_delta.from_files(base, new[-1]))


def admin_main(argv):
    """Drive a running server: activate CODE | devices | inject KIND [N [ENDPOINT]] |
    offer BOARD VERSION SRC [force] | presign PATH [EXPIRES]."""
    p = argparse.ArgumentParser(prog="ota_server.py admin", description=admin_main.__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8002")
    p.add_argument("command", choices=("activate", "devices", "inject", "offer", "presign"))
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    path, body = "/admin/" + a.command, None
    if a.command == "activate":
        body = {"code": a.args[0]}
    elif a.command == "inject":
        body = {"kind": a.args[0], "count": int(a.args[1]) if len(a.args) > 1 else 1,
                "endpoint": a.args[2] if len(a.args) > 2 else "ota"}
    elif a.command == "offer":
        body = {"board_type": a.args[0], "version": a.args[1], "url": a.args[2],
                "force": len(a.args) > 3 and a.args[3] == "force"}
    elif a.command == "presign":
        body = {"path": a.args[0], "expires": int(a.args[1]) if len(a.args) > 1 else 3600}
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(a.url.rstrip("/") + path, data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as e:
        print("%d %s" % (e.code, e.read().decode()), file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print("cannot reach %s: %s" % (a.url, e), file=sys.stderr)
        return 2


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["admin"]:
        return admin_main(argv[1:])
    args = build_parser().parse_args(argv)
    server = OtaServer(log=lambda line: print(line, flush=True), **options_from_args(args))
    configure(server, args)

    async def serve():
        await server.start()
        print("ota_server listening on %s (OTA %s)" % (server.url, server.ota_url), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
