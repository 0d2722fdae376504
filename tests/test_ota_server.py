"""The local OTA server (tools/ota_server.py), driven over real HTTP from CPython."""
import copy
import gzip
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time

import pytest

import ota_server
from conftest import ROOT, free_port

DEV = "D4:06:06:B6:A9:FB"
SPEC_BODY = {
    "version": 0, "uuid": "web_test_client",
    "application": {"name": "xiaoling-web-test", "version": "1.0.0", "compile_time": "2025-04-16 10:00:00",
                    "idf_version": "4.4.3", "elf_sha256": "1234567890abcdef1234567890abcdef1234567890abcdef"},
    "ota": {"label": "xiaoling-web-test"},
    "board": {"type": "esp-box-3", "name": "esp-box-3", "ssid": "MyWiFiNetwork", "rssi": -45,
              "channel": 6, "ip": "192.168.1.100", "mac": "D4:06:06:B6:A9:FA"},
    "flash_size": 16777216, "minimum_free_heap_size": 50000, "mac_address": "D4:06:06:B6:A9:FA",
    "chip_model_name": "esp32s3", "chip_info": {"model": 9, "cores": 2, "revision": 0, "features": 32},
    "partition_table": [{"label": "nvs", "type": 1, "subtype": 2, "address": 36864, "size": 24576}],
}
KEY = bytes(range(32))
SERIAL = "SN-0001"


class Clock:
    def __init__(self, t=1752119934.489):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def fwdir(tmp_path):
    d = tmp_path / "fw"
    d.mkdir()
    (d / "app.bin").write_bytes(bytes(i % 251 for i in range(100000)))
    (d / "app.bin.gz").write_bytes(gzip.compress(b"hello" * 100))
    (d / "sub").mkdir()
    (d / "sub" / "x 1.bin").write_bytes(b"sub-image")
    (tmp_path / "secret.txt").write_bytes(b"outside")
    return d


@pytest.fixture
def srv(clock, fwdir):
    s = ota_server.run_in_thread(clock=clock, firmware_dir=str(fwdir), stall_s=5.0)
    yield s
    s.stop()


def req(s, method, path, body=None, headers=None, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def ota(s, body=SPEC_BODY, dev=DEV, headers=None, raw=None):
    h = {"Content-Type": "application/json", "Client-Id": "0f4e3c1a-1b2c-4d5e-8f90-123456789abc",
         "User-Agent": "esp-box-3/1.0.0", "Activation-Version": "1"}
    if dev is not None:
        h["Device-Id"] = dev
    h.update(headers or {})
    status, hdrs, data = req(s, "POST", "/xiaozhi/ota/", raw if raw is not None else json.dumps(body), h)
    return status, json.loads(data)


def activate(s, challenge, mac=None, serial=SERIAL, key=KEY, dev=DEV, algorithm="hmac-sha256", raw=None):
    body = {"algorithm": algorithm, "serial_number": serial, "challenge": challenge,
            "hmac": mac if mac is not None else hmac.new(key, challenge.encode(), hashlib.sha256).hexdigest()}
    h = {"Content-Type": "application/json", "Client-Id": "c"}
    if dev is not None:
        h["Device-Id"] = dev
    status, _, data = req(s, "POST", "/xiaozhi/ota/activate", raw if raw is not None else json.dumps(body), h)
    return status, json.loads(data)


V2 = {"Activation-Version": "2", "Serial-Number": SERIAL}


# ---- the check -------------------------------------------------------------------------------

def test_spec_example_gets_full_answer(srv, clock):
    status, r = ota(srv)
    assert status == 200
    assert r["server_time"] == {"timestamp": 1752119934489, "timeZone": "Asia/Shanghai", "timezone_offset": 480}
    act = r["activation"]
    assert re.fullmatch(r"\d{6}", act["code"])
    assert act["message"] == "http://127.0.0.1:%d\n%s" % (srv.port, act["code"])
    assert len(act["challenge"]) >= 16 and act["timeout_ms"] == 30000
    assert r["websocket"] == {"url": "ws://127.0.0.1:%d/xiaozhi/v1/" % srv.port}
    assert "mqtt" not in r and "firmware" not in r
    dev = srv.device(DEV.lower())
    assert dev["board_type"] == "esp-box-3" and dev["app_version"] == "1.0.0" and dev["checks"] == 1
    entry = srv.requests[-1]
    assert entry["headers"]["user-agent"] == "esp-box-3/1.0.0" and entry["json"] == SPEC_BODY
    assert entry["status"] == 200


def test_missing_device_id(srv):
    assert ota(srv, dev=None) == (400, {"error": "Device ID is required"})
    assert ota(srv, dev="  ") == (400, {"error": "Device ID is required"})
    assert srv.devices() == []


def _mutate(path, value):
    body = copy.deepcopy(SPEC_BODY)
    obj = body
    for p in path[:-1]:
        obj = obj[p]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return body


@pytest.mark.parametrize("body", [
    _mutate(("application",), KeyError),
    _mutate(("board",), KeyError),
    _mutate(("application",), "1.0.0"),
    _mutate(("board",), ["esp-box-3"]),
    _mutate(("application", "version"), 100),
    _mutate(("application", "version"), KeyError),
    _mutate(("application", "elf_sha256"), KeyError),
    _mutate(("board", "type"), KeyError),
    _mutate(("board", "rssi"), "-45"),
    _mutate(("board", "rssi"), True),
    _mutate(("board", "ssid"), KeyError),
    _mutate(("board", "channel"), 6.5),
    _mutate(("flash_size",), "16M"),
    _mutate(("chip_info",), {"model": "esp32s3"}),
    _mutate(("partition_table",), {"nvs": 1}),
    _mutate(("partition_table", 0, "address"), "0x9000"),
    _mutate(("partition_table", 0, "size"), KeyError),
    _mutate(("ota", "label"), 0),
    [SPEC_BODY],
])
def test_invalid_bodies(srv, body):
    assert ota(srv, body) == (400, {"error": "Invalid OTA request"})
    assert srv.requests[-1]["reason"]


def test_not_json(srv):
    assert ota(srv, raw="{application:") == (400, {"error": "Invalid OTA request"})
    assert ota(srv, raw="") == (400, {"error": "Invalid OTA request"})


def test_lenient_accepts_minimal_body(clock):
    minimal = {"application": {"version": "1.0.0"}, "board": {"type": "esp-box-3"}}
    with ota_server.run_in_thread(clock=clock, strict=False) as s:
        assert ota(s, minimal)[0] == 200
    with ota_server.run_in_thread(clock=clock) as s:
        assert ota(s, minimal)[0] == 400


def test_trailing_slash_and_prefix(clock):
    with ota_server.run_in_thread(clock=clock, prefix="/v1/ota/", tz_key="timezone",
                                  timezone_name="UTC", timezone_offset=0, websocket=None) as s:
        assert req(s, "POST", "/v1/ota", json.dumps(SPEC_BODY), {"Device-Id": DEV})[0] == 404
        assert req(s, "POST", "/xiaozhi/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV})[0] == 404
        status, _, data = req(s, "POST", "/v1/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV})
        r = json.loads(data)
        assert status == 200 and r["server_time"]["timezone"] == "UTC" and "websocket" not in r
        assert s.ota_url == "http://127.0.0.1:%d/v1/ota/" % s.port


def test_mqtt_websocket_templates(srv):
    srv.set_mqtt({"endpoint": "127.0.0.1:1883", "client_id": "GID_test@@@{mac}@@@{client_id}",
                  "username": "u", "password": "p", "publish_topic": "device-server",
                  "subscribe_topic": "devices/p2p/{mac}"})
    srv.set_websocket({"url": "wss://example.com/ws/", "token": "tok-{serial}"})
    status, r = ota(srv, headers={"Client-Id": "abc", "Serial-Number": SERIAL})
    assert r["mqtt"] == {"endpoint": "127.0.0.1:1883", "client_id": "GID_test@@@d40606b6a9fb@@@abc",
                         "username": "u", "password": "p", "publish_topic": "device-server",
                         "subscribe_topic": "devices/p2p/d40606b6a9fb"}
    assert r["websocket"] == {"url": "wss://example.com/ws/", "token": "tok-" + SERIAL}
    srv.set_mqtt(None)
    assert "mqtt" not in ota(srv)[1]


def test_firmware_offers_per_board(srv, fwdir):
    srv.set_offer("esp-box-3", "1.1.0", "app.bin")
    srv.set_offer("*", "0.9.0", "https://cdn.example.com/any.bin", force=True)
    r = ota(srv)[1]
    assert r["firmware"] == {"version": "1.1.0", "url": "http://127.0.0.1:%d/firmware/app.bin" % srv.port}
    other = _mutate(("board", "type"), "lichuang-dev")
    assert ota(srv, other)[1]["firmware"] == {"version": "0.9.0", "url": "https://cdn.example.com/any.bin",
                                              "force": 1}
    srv.clear_offer("*")
    assert "firmware" not in ota(srv, other)[1]
    # bytes, a file outside the folder, a file inside it, a server-relative URL
    srv.set_offer("esp-box-3", "1.2.0", b"IMAGE-BYTES", force=True)
    url = ota(srv)[1]["firmware"]["url"]
    assert req(srv, "GET", url.split(str(srv.port), 1)[1])[2] == b"IMAGE-BYTES"
    outside = fwdir.parent / "other.bin"
    outside.write_bytes(b"OTHER")
    srv.set_offer("esp-box-3", "1.3.0", str(outside))
    assert ota(srv)[1]["firmware"]["url"].endswith("/firmware/other.bin")
    assert req(srv, "GET", "/firmware/other.bin")[2] == b"OTHER"
    srv.set_offer("esp-box-3", "1.4.0", str(fwdir / "sub" / "x 1.bin"))
    assert ota(srv)[1]["firmware"]["url"].endswith("/firmware/sub/x%201.bin")
    assert req(srv, "GET", "/firmware/sub/x%201.bin")[2] == b"sub-image"
    rel = srv.presign("app.bin", 60)
    srv.set_offer("esp-box-3", "1.5.0", rel)
    assert ota(srv)[1]["firmware"]["url"] == "http://127.0.0.1:%d%s" % (srv.port, rel)


# ---- codes and activation --------------------------------------------------------------------

def test_code_stable_then_expires(srv, clock):
    first = ota(srv)[1]["activation"]
    clock.t += 3600
    again = ota(srv)[1]["activation"]          # a reboot within the TTL: same code
    assert again["code"] == first["code"] and again["challenge"] == first["challenge"]
    clock.t += 24 * 3600
    assert srv.activate_code(first["code"]) is None          # expired
    fresh = ota(srv)[1]["activation"]
    assert fresh["code"] != first["code"] and fresh["challenge"] != first["challenge"]
    assert srv.activate_code(first["code"]) is None
    assert srv.activate_code(fresh["code"])["activated"] is True


def test_codes_are_per_device(srv):
    a = ota(srv)[1]["activation"]["code"]
    b = ota(srv, dev="AA:BB:CC:DD:EE:FF")[1]["activation"]["code"]
    assert a != b
    srv.activate_code(b)
    assert "activation" in ota(srv)[1]
    assert "activation" not in ota(srv, dev="aa:bb:cc:dd:ee:ff")[1]


def test_v1_activation_via_admin_http(srv):
    code = ota(srv)[1]["activation"]["code"]
    status, _, data = req(srv, "POST", "/admin/activate", json.dumps({"code": "000000" if code != "000000"
                                                                      else "111111"}))
    assert status == 404 and json.loads(data) == {"error": "Unknown or expired code"}
    assert "activation" in ota(srv)[1]
    status, _, data = req(srv, "POST", "/admin/activate", json.dumps({"code": code}))
    assert status == 200 and json.loads(data)["device"]["activated"] is True
    r = ota(srv)[1]
    assert "activation" not in r and "server_time" in r
    assert [d["activated"] for d in srv.devices()] == [True]
    assert srv.deactivate(DEV) is True
    assert ota(srv)[1]["activation"]["code"] != code


def test_activation_form_on_index_page(srv):
    code = ota(srv)[1]["activation"]["code"]
    assert code.encode() in req(srv, "GET", "/")[2]
    status, hdrs, _ = req(srv, "POST", "/admin/activate", "code=" + code,
                          {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and srv.device(DEV)["activated"]


def test_auto_activate(clock):
    with ota_server.run_in_thread(clock=clock, auto_activate_s=5) as s:
        assert "activation" in ota(s)[1]
        clock.t += 4
        assert "activation" in ota(s)[1]
        clock.t += 1
        assert "activation" not in ota(s)[1]


def test_v2_hmac_then_code(srv):
    srv.register_hmac_key(SERIAL, KEY)
    act = ota(srv, headers=V2)[1]["activation"]
    assert activate(srv, act["challenge"]) == (202, {"message": "Waiting for the activation code to be entered"})
    assert srv.device(DEV)["hmac_verified"] and not srv.device(DEV)["activated"]
    assert srv.activate_code(act["code"])["activated"] is True
    assert activate(srv, act["challenge"])[0] == 200
    assert "activation" not in ota(srv, headers=V2)[1]


def test_v2_code_then_hmac(srv):
    srv.register_hmac_key(SERIAL, KEY)
    act = ota(srv, headers=V2)[1]["activation"]
    dev = srv.activate_code(act["code"])
    assert dev["confirmed"] and not dev["activated"]          # v2 still needs the proof
    again = ota(srv, headers=V2)[1]["activation"]
    assert again["code"] == act["code"]
    assert activate(srv, act["challenge"]) == (200, {"message": "Device activated"})
    assert "activation" not in ota(srv, headers=V2)[1]


def test_v2_errors(srv, clock):
    srv.register_hmac_key(SERIAL, KEY)
    ch = ota(srv, headers=V2)[1]["activation"]["challenge"]
    assert activate(srv, ch, dev=None) == (400, {"error": "Device ID is required"})
    assert activate(srv, ch, raw="not json") == (400, {"error": "Invalid activation request"})
    assert activate(srv, ch, raw=json.dumps({"algorithm": "hmac-sha256"})) == \
        (400, {"error": "Invalid activation request"})
    assert activate(srv, ch, algorithm="hmac-md5") == (400, {"error": "Unsupported algorithm"})
    assert activate(srv, "0" * 32) == (400, {"error": "Unknown or expired challenge"})
    assert activate(srv, ch, dev="11:22:33:44:55:66") == (400, {"error": "Unknown or expired challenge"})
    assert activate(srv, ch, serial="SN-9999") == (401, {"error": "Unknown serial number"})
    srv.register_hmac_key("SN-0002", KEY)
    assert activate(srv, ch, serial="SN-0002") == (401, {"error": "Serial number mismatch"})
    assert activate(srv, ch, key=b"wrong key") == (401, {"error": "HMAC verification failed"})
    assert activate(srv, ch, mac="zz") == (401, {"error": "HMAC verification failed"})
    assert not srv.device(DEV)["hmac_verified"]
    assert activate(srv, ch)[0] == 202
    clock.t += 24 * 3600 + 1
    assert activate(srv, ch) == (400, {"error": "Unknown or expired challenge"})


def test_v2_uppercase_hex_accepted(srv):
    srv.register_hmac_key(SERIAL, KEY)
    ch = ota(srv, headers=V2)[1]["activation"]["challenge"]
    mac = hmac.new(KEY, ch.encode(), hashlib.sha256).hexdigest().upper()
    assert activate(srv, ch, mac=mac)[0] == 202


# ---- downloads -------------------------------------------------------------------------------

def test_full_download(srv, fwdir):
    status, h, data = req(srv, "GET", "/firmware/app.bin")
    assert status == 200 and data == (fwdir / "app.bin").read_bytes()
    assert h["Content-Length"] == "100000" and h["Accept-Ranges"] == "bytes"
    status, h, data = req(srv, "HEAD", "/firmware/app.bin")
    assert status == 200 and h["Content-Length"] == "100000" and data == b""


@pytest.mark.parametrize("rng,start,end", [
    ("bytes=0-0", 0, 0), ("bytes=10-19", 10, 19), ("bytes=99990-", 99990, 99999),
    ("bytes=-16", 99984, 99999), ("bytes=99000-200000", 99000, 99999), ("bytes=-500000", 0, 99999),
])
def test_range(srv, fwdir, rng, start, end):
    whole = (fwdir / "app.bin").read_bytes()
    status, h, data = req(srv, "GET", "/firmware/app.bin", headers={"Range": rng})
    assert status == 206
    assert h["Content-Range"] == "bytes %d-%d/100000" % (start, end)
    assert int(h["Content-Length"]) == end - start + 1 and data == whole[start:end + 1]


@pytest.mark.parametrize("rng", ["bytes=100000-", "bytes=5-2", "bytes=abc", "items=0-1", "bytes=0-1,5-6",
                                 "bytes=-0"])
def test_bad_range(srv, rng):
    status, h, _ = req(srv, "GET", "/firmware/app.bin", headers={"Range": rng})
    assert status == 416 and h["Content-Range"] == "bytes */100000"


def test_not_found_and_traversal(srv):
    assert req(srv, "GET", "/firmware/nope.bin")[0] == 404
    assert req(srv, "GET", "/firmware/..%2Fsecret.txt")[0] == 404
    assert req(srv, "GET", "/firmware/sub/..%2F..%2Fsecret.txt")[0] == 404
    assert srv._lookup_blob("../secret.txt") is None and srv._lookup_blob("sub/../app.bin") is not None


def test_gzip_served_as_is(srv, fwdir):
    status, h, data = req(srv, "GET", "/firmware/app.bin.gz", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and data == (fwdir / "app.bin.gz").read_bytes()
    assert "Content-Encoding" not in h and h["Content-Type"] == "application/gzip"
    assert gzip.decompress(data) == b"hello" * 100


def test_registered_image(srv):
    srv.register_image("mem/img.bin", b"\xe9" + bytes(999))
    status, h, data = req(srv, "GET", "/firmware/mem/img.bin", headers={"Range": "bytes=0-3"})
    assert status == 206 and data == b"\xe9\x00\x00\x00"
    status, _, _ = req(srv, "POST", "/admin/image?name=up.bin", b"UPLOADED")
    assert status == 200 and req(srv, "GET", "/firmware/up.bin")[2] == b"UPLOADED"


# ---- pre-signed URLs -------------------------------------------------------------------------

def test_presigned_ok(srv, fwdir):
    url = srv.presign("sub/x 1.bin", 600)
    assert url.startswith("/api/v1/oss/ithings-private/sub/x%201.bin?X-Amz-Algorithm=")
    assert "X-Amz-Expires=600" in url and "%2F" in url and re.search(r"X-Amz-Signature=[0-9a-f]{64}$", url)
    status, h, data = req(srv, "GET", url)
    assert status == 200 and data == b"sub-image"
    status, h, data = req(srv, "GET", srv.presign("app.bin", 600), headers={"Range": "bytes=5-9"})
    assert status == 206 and data == (fwdir / "app.bin").read_bytes()[5:10]


def _flip_last_hex(url):
    return url[:-1] + ("0" if url[-1] != "0" else "1")


def test_presigned_rejections(srv, clock):
    url = srv.presign("app.bin", 600)
    bad = [
        _flip_last_hex(url),                                            # tampered signature
        url.replace("X-Amz-Expires=600", "X-Amz-Expires=6000"),          # tampered expiry
        url.replace("%2F", "/"),                                         # re-encoded by the client
        url.replace("app.bin", "app.bin.gz"),                            # another file
        url.split("&X-Amz-Signature=")[0],                               # unsigned
        "/api/v1/oss/ithings-private/app.bin",
    ]
    for u in bad:
        status, h, data = req(srv, "GET", u)
        assert status == 403, u
        assert b"<Code>AccessDenied</Code>" in data
    assert req(srv, "GET", url)[0] == 200
    clock.t += 601
    status, _, data = req(srv, "GET", url)
    assert status == 403 and b"expired" in data


def test_presigned_other_secret_refused(srv):
    foreign = ota_server.presign("app.bin", 600, b"another secret", now=srv.clock())
    assert req(srv, "GET", foreign)[0] == 403


# ---- injected faults -------------------------------------------------------------------------

@pytest.mark.parametrize("kind,status,check", [
    ("error500", 500, lambda d: json.loads(d) == {"error": "Failed to read device auto_update status"}),
    ("500", 500, lambda d: json.loads(d) == {"error": "Failed to read device auto_update status"}),
    ("error400", 400, lambda d: json.loads(d) == {"error": "Invalid OTA request"}),
    ("success_false", 200, lambda d: json.loads(d)["success"] is False and json.loads(d)["message"]),
    ("not_object", 200, lambda d: isinstance(json.loads(d), list)),
    ("wrong_types", 200, lambda d: isinstance(json.loads(d)["server_time"], str)),
])
def test_ota_json_faults(srv, kind, status, check):
    srv.inject(kind, count=2)
    for _ in range(2):
        s, h, d = req(srv, "POST", "/xiaozhi/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV})
        assert s == status and check(d)
        assert srv.requests[-1]["fault"] == ota_server.FAULT_ALIASES.get(kind, kind)
    assert ota(srv)[0] == 200                    # count used up


def test_garbage(srv):
    srv.inject("garbage")
    s, h, d = req(srv, "POST", "/xiaozhi/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV})
    assert s == 200 and h["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        json.loads(d)


def test_faults_queue_in_order(srv):
    srv.inject("error500")
    srv.inject("success_false")
    assert ota(srv)[0] == 500
    assert ota(srv)[1]["success"] is False
    assert ota(srv)[0] == 200
    srv.inject("error500", 3)
    srv.clear_faults()
    assert ota(srv)[0] == 200


def test_inject_validation(srv):
    with pytest.raises(ValueError):
        srv.inject("explode")
    with pytest.raises(ValueError):
        srv.inject("corrupt", endpoint="ota")
    with pytest.raises(ValueError):
        srv.inject("error500", endpoint="nowhere")
    status, _, data = req(srv, "POST", "/admin/inject", json.dumps({"kind": "explode"}))
    assert status == 400 and "explode" in json.loads(data)["error"]


def test_stall_fires_client_timeout(srv):
    srv.inject("stall", seconds=3)
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        req(srv, "POST", "/xiaozhi/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV}, timeout=0.5)
    assert time.monotonic() - t0 < 2
    assert ota(srv)[0] == 200


def test_stall_then_answers(srv):
    srv.inject("stall", seconds=0.3)
    t0 = time.monotonic()
    assert ota(srv)[0] == 200
    assert time.monotonic() - t0 >= 0.3


def test_disconnect(srv):
    srv.inject("disconnect")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        req(srv, "POST", "/xiaozhi/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV})
    assert ota(srv)[0] == 200


def test_truncate_json(srv):
    srv.inject("truncate")
    with pytest.raises(http.client.IncompleteRead):
        req(srv, "POST", "/xiaozhi/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV})


def test_chunked_json(srv):
    srv.inject("chunked")
    s, h, d = req(srv, "POST", "/xiaozhi/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV})
    assert s == 200 and h["Transfer-Encoding"] == "chunked" and "Content-Length" not in h
    assert re.fullmatch(r"\d{6}", json.loads(d)["activation"]["code"])


def _raw_response(port, request_bytes):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sk:
        sk.sendall(request_bytes)
        out = b""
        while True:
            chunk = sk.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_chunked_is_really_several_chunks(srv):
    srv.inject("chunked")
    body = json.dumps(SPEC_BODY).encode()
    raw = _raw_response(srv.port, b"POST /xiaozhi/ota/ HTTP/1.1\r\nHost: x\r\nDevice-Id: " + DEV.encode() +
                        b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    payload = raw.split(b"\r\n\r\n", 1)[1]
    sizes = re.findall(rb"(?:^|\r\n)([0-9a-fA-F]+)\r\n", payload)
    assert len([s for s in sizes if int(s, 16) > 0]) >= 3 and payload.endswith(b"0\r\n\r\n")


def test_redirects(srv):
    srv.inject("redirect", 2)
    s, h, _ = req(srv, "POST", "/xiaozhi/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV})
    assert s == 307 and h["Location"] == "/xiaozhi/ota/"
    srv.clear_faults()
    srv.inject("redirect_abs", endpoint="firmware")
    s, h, _ = req(srv, "GET", "/firmware/app.bin?x=1")
    assert s == 307 and h["Location"] == "http://127.0.0.1:%d/firmware/app.bin?x=1" % srv.port
    assert req(srv, "GET", "/firmware/app.bin?x=1")[0] == 200


def test_activate_endpoint_faults(srv):
    srv.register_hmac_key(SERIAL, KEY)
    ch = ota(srv, headers=V2)[1]["activation"]["challenge"]
    srv.inject("error500", endpoint="activate")
    assert activate(srv, ch)[0] == 500
    assert activate(srv, ch)[0] == 202


def test_firmware_faults(srv, fwdir):
    whole = (fwdir / "app.bin").read_bytes()
    srv.inject("corrupt", endpoint="firmware")
    s, _, d = req(srv, "GET", "/firmware/app.bin")
    assert s == 200 and len(d) == len(whole)
    assert [i for i in range(len(d)) if d[i] != whole[i]] == [50000]
    srv.inject("truncate", endpoint="firmware")
    with pytest.raises(http.client.IncompleteRead) as e:
        req(srv, "GET", "/firmware/app.bin")
    assert len(e.value.partial) == 50000
    srv.inject("chunked", endpoint="firmware")
    s, h, d = req(srv, "GET", "/firmware/app.bin")
    assert s == 200 and d == whole and "Content-Length" not in h
    srv.inject("error500", endpoint="firmware")
    assert req(srv, "GET", srv.presign("app.bin", 60))[0] == 500
    srv.inject("stall_mid", endpoint="firmware", seconds=3)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=0.5)
    conn.request("GET", "/firmware/app.bin")
    r = conn.getresponse()
    assert r.status == 200 and r.headers["Content-Length"] == "100000"
    assert r.read(50000) == whole[:50000]
    with pytest.raises(socket.timeout):
        r.read(1)
    conn.close()


# ---- admin HTTP, logging, TLS, CLI ----------------------------------------------------------

def test_admin_http(srv):
    def post(path, body):
        s, _, d = req(srv, "POST", path, json.dumps(body))
        return s, json.loads(d)

    assert post("/admin/hmac_key", {"serial": SERIAL, "key": KEY.hex()})[0] == 200
    assert post("/admin/offer", {"board_type": "esp-box-3", "version": "2.0.0", "path": "app.bin",
                                 "force": True})[0] == 200
    assert post("/admin/mqtt", {"endpoint": "h:1883", "client_id": "c", "username": "u", "password": "p"})[0] == 200
    assert post("/admin/websocket", {"url": "ws://w/"})[0] == 200
    r = ota(srv, headers=V2)[1]
    assert r["firmware"]["force"] == 1 and r["mqtt"]["endpoint"] == "h:1883" and r["websocket"] == {"url": "ws://w/"}
    assert activate(srv, r["activation"]["challenge"])[0] == 202
    s, body = post("/admin/presign", {"path": "app.bin", "expires": 30})
    assert s == 200 and req(srv, "GET", body["url"])[0] == 200 and body["absolute"].endswith(body["url"])
    assert post("/admin/inject", {"kind": "error500", "count": 1})[0] == 200
    assert ota(srv)[0] == 500
    assert post("/admin/offer", {"board_type": "esp-box-3", "version": None})[0] == 200
    assert post("/admin/mqtt", None)[0] == 200
    r = ota(srv)[1]
    assert "firmware" not in r and "mqtt" not in r
    s, _, d = req(srv, "GET", "/admin/devices")
    assert json.loads(d)["devices"][0]["hmac_verified"] is True
    s, _, d = req(srv, "GET", "/admin/requests")
    assert json.loads(d)["requests"][0]["endpoint"] == "ota"
    assert post("/admin/activate", {})[0] == 400
    assert post("/admin/deactivate", {"device_id": "nobody"})[0] == 404


def test_log_lines(clock):
    lines = []
    with ota_server.run_in_thread(clock=clock, log=lines.append) as s:
        code = ota(s)[1]["activation"]["code"]
        ota(s, dev=None)
        req(s, "POST", "/xiaozhi/ota", "{}")
        s.activate_code(code)
    assert "code %s issued for %s (v1, expires in 86400 s)" % (code, DEV) in lines
    assert "POST /xiaozhi/ota/ 200 %s" % DEV in lines
    assert "POST /xiaozhi/ota/ 400 - (no Device-Id)" in lines
    assert "POST /xiaozhi/ota 404 -" in lines
    assert "device %s activated (v1)" % DEV in lines


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(not any(os.path.exists(os.path.join(p, "openssl"))
                            for p in os.environ.get("PATH", "").split(os.pathsep)), reason="no openssl")
def test_https(clock, tmp_path):
    d = str(tmp_path)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test CA", cwd=d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(os.path.join(d, "srv.pem"), os.path.join(d, "srv.key"))
    with ota_server.run_in_thread(clock=clock, ssl_context=sctx) as s:
        assert s.ota_url.startswith("https://127.0.0.1:")
        cctx = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
        conn = http.client.HTTPSConnection("127.0.0.1", s.port, context=cctx, timeout=5)
        conn.request("POST", "/xiaozhi/ota/", json.dumps(SPEC_BODY), {"Device-Id": DEV})
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 200 and body["activation"]["message"].startswith("https://127.0.0.1:")
        conn.close()
        conn = http.client.HTTPSConnection("127.0.0.1", s.port, context=ssl.create_default_context(), timeout=5)
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.request("POST", "/xiaozhi/ota/", "{}", {"Device-Id": DEV})
        conn.close()


def test_cli(tmp_path, fwdir):
    port = free_port()
    script = os.path.join(ROOT, "tools", "ota_server.py")
    proc = subprocess.Popen(
        [sys.executable, script, "--port", str(port), "--firmware-dir", str(fwdir),
         "--offer", "esp-box-3=1.1.0:app.bin,force", "--mqtt-endpoint", "127.0.0.1:1883",
         "--hmac-key", "%s=%s" % (SERIAL, KEY.hex()), "--code-ttl", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "listening on http://127.0.0.1:%d" % port in proc.stdout.readline()

        class S:
            pass
        s = S()
        s.port = port
        r = ota(s, headers=V2)[1]
        assert r["firmware"] == {"version": "1.1.0", "url": "http://127.0.0.1:%d/firmware/app.bin" % port,
                                 "force": 1}
        assert r["mqtt"]["endpoint"] == "127.0.0.1:1883" and r["mqtt"]["client_id"] == DEV
        code = r["activation"]["code"]
        assert activate(s, r["activation"]["challenge"])[0] == 202
        out = subprocess.run([sys.executable, script, "admin", "--url", "http://127.0.0.1:%d" % port,
                              "activate", code], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0 and json.loads(out.stdout)["device"]["activated"] is True
        bad = subprocess.run([sys.executable, script, "admin", "--url", "http://127.0.0.1:%d" % port,
                              "activate", "x"], capture_output=True, text=True, timeout=20)
        assert bad.returncode == 1 and "404" in bad.stderr
        assert "activation" not in ota(s, headers=V2)[1]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert "code %s issued for %s (v2, expires in 100 s)" % (code, DEV) in out
    assert "POST /xiaozhi/ota/ 200 %s" % DEV in out
    assert "POST /xiaozhi/ota/activate 202 %s" % DEV in out
    assert "device %s activated (v2)" % DEV in out


def test_parse_offer():
    assert ota_server._parse_offer("esp-box-3=1.1.0:http://h:80/a.bin") == \
        ("esp-box-3", "1.1.0", "http://h:80/a.bin", False)
    assert ota_server._parse_offer("*=2.0:a.bin,force") == ("*", "2.0", "a.bin", True)
    with pytest.raises(Exception):
        ota_server._parse_offer("esp-box-3:1.1.0")
