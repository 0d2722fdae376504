# Device identity: Device-Id (Wi-Fi MAC) and the persistent Client-Id (UUIDv4).
import binascii
import os


def format_mac(mac, case="upper"):
    text = binascii.hexlify(mac, ":").decode()
    return text.upper() if case == "upper" else text


def new_uuid4():
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = binascii.hexlify(b).decode()
    return "%s-%s-%s-%s-%s" % (h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])


def client_id(settings):
    """The Client-Id: generated once, then read back from settings on every boot."""
    uid = settings.get("uuid")
    if not isinstance(uid, str) or len(uid) != 36:
        uid = new_uuid4()
        settings.set("uuid", uid)
    return uid
