# Which MQTT settings drive upgrade pushes: config.json's `mqtt`, or the OTA check's `mqtt`
# section. On a xiaozhi server that section describes the voice-chat gateway (endpoint, a
# "GID_...@@@MAC@@@uuid" client id, chat topics), not the iThings broker, so the rule is:
#
# - a broker named in config.json (mqtt.host) always wins: the section is then only the chat
#   settings that ota_check stores;
# - without one, the section names the push broker only when it carries the iThings identity
#   (product_id / device_name keys, or a "{productID}&{deviceName}" client_id) or the config
#   says mqtt.from_ota_check: true.
#
# Pure (no I/O, no logging): tested without a socket; mqtt_ota and app both ask it.


def identity(section):
    """(product_id, device_name) an OTA-check `mqtt` section carries, else (None, None)."""
    if not isinstance(section, dict):
        return None, None
    pid = section.get("product_id") or section.get("productID")
    dev = section.get("device_name") or section.get("deviceName")
    cid = section.get("client_id")
    if not pid and isinstance(cid, str) and "&" in cid:
        a, b = cid.split("&", 1)
        if a and b:
            pid, dev = a, dev or b
    if not isinstance(pid, str) or not pid:
        return None, None
    return pid, dev if isinstance(dev, str) and dev else None


def uses_section(cfg, section):
    """True when the OTA check's section, not config.json, names the push broker."""
    if not isinstance(section, dict) or not section.get("endpoint") or cfg.get("host"):
        return False
    return cfg.get("from_ota_check") is True or identity(section)[0] is not None


def _split_endpoint(endpoint, default_port):
    host, port = endpoint, default_port
    i = endpoint.rfind(":")
    if i > 0 and endpoint[i + 1:].isdigit():
        host, port = endpoint[:i], int(endpoint[i + 1:])
    return host, port


def pick(cfg, section):
    """The push broker and identity from config.json's `mqtt` (cfg) and the stored section:
    {source, host, port, tls, product_id, device_name, client_id, username, password,
    keepalive}. device_name / client_id None: derive them from the MAC / the identity."""
    tls = bool(cfg.get("tls"))
    port = cfg.get("port") or (8883 if tls else 1883)
    p = {"source": "config", "host": cfg.get("host"), "port": port, "tls": tls,
         "product_id": cfg.get("product_id"), "device_name": cfg.get("device_name"),
         "client_id": None, "username": cfg.get("username"), "password": cfg.get("password"),
         "keepalive": cfg.get("keepalive")}
    if uses_section(cfg, section):
        p["source"] = "ota_check"
        p["host"], p["port"] = _split_endpoint(section["endpoint"], port)
        pid, dev = identity(section)
        if pid:
            p["product_id"], p["device_name"] = pid, dev or p["device_name"]
        p["client_id"] = section.get("client_id") or None
        for k in ("username", "password"):
            if k in section:
                p[k] = section[k]
        p["keepalive"] = section.get("keepalive") or p["keepalive"]
    if p["port"] == 8883:
        p["tls"] = True
    if p["username"] == "":
        p["username"] = None
    ka = p["keepalive"] or 60
    p["keepalive"] = ka if isinstance(ka, int) and 0 < ka < 65536 else 60
    return p


def off_reason(cfg, section, mac):
    """Why upgrade pushes cannot run with these settings, or None when they can."""
    p = pick(cfg, section)
    if not p["host"]:
        if isinstance(section, dict) and section.get("endpoint"):
            return ("config.json names no broker (mqtt.host) and the server's mqtt section "
                    "is not an iThings broker (set mqtt.host, or mqtt.from_ota_check: true)")
        return "mqtt.host not configured"
    from firmware import ithings  # only when there is a broker to talk to (RAM)
    try:
        ithings.Topics(p["product_id"], p["device_name"] or ithings.default_device_name(mac))
    except ValueError as e:
        return str(e)
    return None
