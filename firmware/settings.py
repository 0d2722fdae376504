# Persistent settings: key -> JSON value. Writes only when a value really changes (flash wear).
import json


class JsonFileSettings:
    """Settings in one JSON file (the simulated board's stand-in for NVS)."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path) as f:
                self._data = json.load(f)
        except (OSError, ValueError):
            self._data = {}
        self.writes = 0

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
            n = self._nvs.get_blob(key, self._buf)
        except OSError:
            return default
        try:
            return json.loads(bytes(self._buf[:n]))
        except ValueError:
            return default

    def set(self, key, value):
        if self.get(key, self) == value:
            return False
        self._nvs.set_blob(key, json.dumps(value))
        self._nvs.commit()
        self.writes += 1
        return True

    def delete(self, key):
        try:
            self._nvs.erase_key(key)
        except OSError:
            return False
        self._nvs.commit()
        return True
