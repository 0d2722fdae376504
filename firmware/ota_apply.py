# Applying a validated OTA-check answer (ota_check.Result): set the clock, persist the `mqtt`,
# `websocket` and timezone settings, log each effect.
#
# Flash wear: a setting is written only when it changes, and a section the answer leaves out
# is cleared (old credentials must not stay in use). The xiaozhi server's websocket token embeds
# a timestamp, so it changes at nearly every check: a change of the token alone is persisted at
# most once an hour (TOKEN_WRITE_MS) -- a reboot checks again and gets a fresh one anyway.
from firmware import log

_log = log.get("ota")

K_MQTT = "mqtt"
K_WEBSOCKET = "websocket"
K_TIMEZONE = "timezone"
TOKEN_WRITE_MS = 3600000   # a token-only websocket change is persisted at most this often
_ws_written_at = None      # board.time_ms() of this boot's last websocket write
_time_logged = False       # info once per boot, then debug: re-checks repeat it every interval


def _days_to_civil(z):
    # Howard Hinnant's days-from-epoch -> (y, m, d); avoids the 1970/2000 time.gmtime split.
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def iso_utc(ms):
    s = int(ms) // 1000
    y, mo, d = _days_to_civil(s // 86400)
    r = s % 86400
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, mo, d, r // 3600, (r // 60) % 60, r % 60)


def _store(settings, key, value, written):
    try:
        if value is None:
            changed = settings.delete(key)
        else:
            changed = settings.set(key, value)
    except OSError as e:  # a full NVS must not fail the check; the values still apply this boot
        _log.error("could not store %s: %s", key, e)
        return False
    if changed:
        written.append(key)
    return changed


def apply(board, r):
    """Set the clock and persist what changed; log each effect."""
    s = board.settings
    st = r.server_time
    if st is not None:
        global _time_logged
        board.set_time(st["utc_ms"])
        (_log.debug if _time_logged else _log.info)(
            "server time applied: %s UTC (timezone %s, offset %s min)", iso_utc(st["utc_ms"]),
            st["timezone"] or "-", "-" if st["offset_min"] is None else st["offset_min"])
        _time_logged = True
        if st["timezone"] is not None or st["offset_min"] is not None:
            _store(s, K_TIMEZONE, {"name": st["timezone"], "offset_min": st["offset_min"]}, r.written)
    if r.mqtt is not None:
        if _store(s, K_MQTT, r.mqtt, r.written):
            _log.info("MQTT settings stored (endpoint %s)", r.mqtt.get("endpoint", "-"))
        else:
            _log.debug("MQTT settings unchanged")
    elif _store(s, K_MQTT, None, r.written):
        _log.info("MQTT settings cleared: the server sent none")
    _store_websocket(board, r.websocket, r.written)


def _without_token(ws):
    return dict((k, v) for k, v in ws.items() if k != "token")


def _store_websocket(board, ws, written):
    global _ws_written_at
    s = board.settings
    if ws is None:
        if _store(s, K_WEBSOCKET, None, written):
            _log.info("WebSocket settings cleared: the server sent none")
        return
    now = board.time_ms()
    old = s.get(K_WEBSOCKET)
    if old != ws and isinstance(old, dict) and _without_token(old) == _without_token(ws) \
            and _ws_written_at is not None and 0 <= now - _ws_written_at < TOKEN_WRITE_MS:
        _log.debug("WebSocket token changed; kept in RAM until the hourly write")
        return
    if _store(s, K_WEBSOCKET, ws, written):
        _ws_written_at = now
        _log.info("WebSocket settings stored (%s)", ws.get("url", "-"))
