# The http_client `tls` option from config.json: {"tls": {"verify": bool, "ca_file": path|null,
# "allow_http_redirect": bool}}.
from firmware import log

_log = log.get("tls")
_cache = {}


def options(config):
    """{"verify": bool, "ca": bytes or None, "allow_http_redirect": bool} for
    http_client.request(tls=...). allow_http_redirect (config tls.allow_http_redirect, default
    off) lets an https URL redirect to plain http."""
    tls = config.get("tls") or {}
    verify = tls.get("verify", True) is not False
    path = tls.get("ca_file")
    ca = None
    if path:
        ca = _cache.get(path)
        if ca is None:
            try:
                with open(path, "rb") as f:
                    ca = f.read()
                _cache[path] = ca
            except OSError as e:
                _log.error("cannot read CA file %s: %s", path, e)
    return {"verify": verify, "ca": ca, "allow_http_redirect": tls.get("allow_http_redirect") is True}
