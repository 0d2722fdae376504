# Persistent settings: key -> JSON value. Writes only when a value really changes (flash wear).
import binascii
import hashlib
import json

from firmware import log

_log = log.get("settings")

NVS_KEY_MAX = 15  # ESP-IDF NVS keys are at most 15 characters (longer ones raise KEY_TOO_LONG)
NVS_BLOB_MAX = 4096       # read buffer grows to this when a blob does not fit the first one
_NVS_INVALID_LENGTH = -0x110C  # OSError code of ESP_ERR_NVS_INVALID_LENGTH: buffer too small


def nvs_key(key):
    """The NVS key for a settings key: itself when short enough, else a stable 15-char digest
    form (6 chars of the name, "~", 8 hex digits of its SHA-256)."""
    if len(key) <= NVS_KEY_MAX:
        return key
    return key[:6] + "~" + binascii.hexlify(hashlib.sha256(key.encode()).digest()[:4]).decode()


def _member(piece, out):
    try:
        d = json.loads("{" + piece + "}")
    except ValueError:
        return
    if isinstance(d, dict):
        out.update(d)


def salvage(text):
    """The members of a damaged top-level JSON object that still parse, each on its own (as a
    damaged NVS page loses only its own entries): a torn tail or one bad value loses that key."""
    out = {}
    i = text.find("{")
    if i < 0:
        return out
    depth = 0
    in_str = esc = False
    start = i + 1
    for j in range(i + 1, len(text)):
        c = text[j]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            if depth == 0:
                _member(text[start:j], out)
                return out
            depth -= 1
        elif c == "," and depth == 0:
            _member(text[start:j], out)
            start = j + 1
    _member(text[start:], out)
    return out


class JsonFileSettings:
    """Settings in one JSON file (the simulated board's stand-in for NVS). A file that does not
    hold a JSON object is logged, kept aside as <path>.bad, and what parses of it is kept."""

    def __init__(self, path):
        self.path = path
        self.writes = 0
        self._data = self._load()

    def _load(self):
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except OSError:
            return {}  # no settings yet
        try:
            text = raw.decode()
        except UnicodeError:  # bytes that are not UTF-8: what is ASCII may still parse
            text = "".join(chr(b) if b < 128 else "?" for b in raw)
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data
        kept = salvage(text)
        import os
        os.rename(self.path, self.path + ".bad")
        _log.error("%s is damaged (%s); kept it as %s.bad and recovered %d key(s): %s", self.path,
                   "empty" if not text.strip() else "not a JSON object", self.path, len(kept),
                   ", ".join(sorted(kept)) or "none")
        self._data = kept
        if kept:
            self._save()
        return kept

    def get(self, key, default=None):
        return self._data.get(key, default)

    def set(self, key, value):
        if key in self._data and self._data[key] == value:
            return False
        self._data[key] = value
        self._save()
        return True

    def delete(self, key):
        if key not in self._data:
            return False
        del self._data[key]
        self._save()
        return True

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._data, f)
        import os
        os.rename(tmp, self.path)
        self.writes += 1


class NvsSettings:
    """Settings in an esp32.NVS namespace, one JSON blob per key."""

    def __init__(self, nvs):
        self._nvs = nvs
        self._buf = bytearray(1024)
        self.writes = 0

    def get(self, key, default=None):
        try:
            n = self._nvs.get_blob(nvs_key(key), self._buf)
        except OSError as e:
            # A blob larger than the buffer (a resume record with a long pre-signed URL) would
            # read as missing forever -- and be rewritten on every set(): grow once and retry.
            if e.args and e.args[0] == _NVS_INVALID_LENGTH and len(self._buf) < NVS_BLOB_MAX:
                self._buf = bytearray(NVS_BLOB_MAX)
                return self.get(key, default)
            return default
        try:
            return json.loads(bytes(self._buf[:n]))
        except ValueError:  # one damaged entry costs only its own key, as NVS itself does
            _log.error("NVS entry %s is not JSON; ignoring it", key)
            return default

    def set(self, key, value):
        if self.get(key, self) == value:
            return False
        self._nvs.set_blob(nvs_key(key), json.dumps(value))
        self._nvs.commit()
        self.writes += 1
        return True

    def delete(self, key):
        try:
            self._nvs.erase_key(nvs_key(key))
        except OSError:
            return False
        self._nvs.commit()
        return True
