# The http_client `tls` option from config.json: {"tls": {"verify": bool, "ca_file": path|null,
# "allow_http_redirect": bool}}.
from firmware import log, pem

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


def client_context(ca, verify=True):
    """An ssl.SSLContext for a TLS client, built like http_client's: CERT_REQUIRED against the
    DER certificates in `ca` (PEM text, a PEM bundle or DER), or CERT_NONE when verify is off.
    The peer's name is checked by wrap_socket(sock, server_hostname=...). Raises ValueError for
    a missing or unusable CA."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if not ca:
        raise ValueError("TLS verification on but no CA (tls.ca_file) configured")
    ctx.verify_mode = ssl.CERT_REQUIRED
    for der in pem.ders(ca):
        try:
            ctx.load_verify_locations(cadata=der)
        except OSError:
            raise ValueError("invalid CA certificate")
    return ctx
