"""The OTA check on the simulated board (MicroPython unix port) against the local OTA server and a
fault-injecting one: what is sent, what is applied, and that every failure is a clear CheckError
that leaves stored settings alone."""
import json

import pytest

import ota_server
from conftest import free_port, mpy_json
from http_fault_server import Reply, redirect, start
from ota_helpers import check, make_root, settings, settings_bytes

FIXED_NOW = 1752119934.489
MQTT = {"endpoint": "127.0.0.1:1883", "client_id": "{device_id}", "username": "u", "password": "p"}


@pytest.fixture
def srv():
    s = ota_server.run_in_thread(clock=lambda: FIXED_NOW, mqtt=MQTT, stall_s=5)
    yield s
    s.stop()


def test_check_posts_the_board_info_and_applies_the_answer(tmp_path, srv):
    root = make_root(tmp_path, srv.ota_url)
    out, log = check(root)
    assert out["ok"], out
    req = srv.requests[-1]
    assert req["path"] == "/xiaozhi/ota/" and req["method"] == "POST"
    assert req["headers"]["Device-Id"] == "D4:06:06:B6:A9:FB"
    assert req["headers"]["Activation-Version"] == "1"
    assert req["json"]["application"]["version"] == "1.0.0"
    assert req["json"]["ota"] == {"label": "ota_0"}
    # activation code shown to the user is the server's
    code = srv.device("D4:06:06:B6:A9:FB")["code"]
    assert out["activation"]["code"] == code and len(code) == 6
    # server time: the clock is UTC, the zone is kept apart
    assert abs(out["time_ms"] - 1752119934489) < 5000
    assert "server time applied: 2025-07-10T03:58:54Z UTC" in log
    st = settings(root)
    assert st["timezone"] == {"name": "Asia/Shanghai", "offset_min": 480}
    assert st["mqtt"] == {"endpoint": "127.0.0.1:1883", "client_id": "D4:06:06:B6:A9:FB",
                          "username": "u", "password": "p"}
    assert st["websocket"]["url"].startswith("ws://127.0.0.1:")
    assert "MQTT settings stored" in log
    assert sorted(out["written"]) == ["mqtt", "timezone", "websocket"]
    # the same answer again writes nothing (flash wear)
    out2, log2 = check(root)
    assert out2["ok"] and out2["writes"] == 0 and out2["written"] == []
    assert "MQTT settings stored" not in log2


def test_timezone_key_spelled_timezone_is_accepted(tmp_path):
    s = ota_server.run_in_thread(tz_key="timezone", timezone_name="Europe/Berlin", timezone_offset=60)
    try:
        root = make_root(tmp_path, s.ota_url)
        out, _ = check(root)
    finally:
        s.stop()
    assert out["ok"] and out["server_time"]["timezone"] == "Europe/Berlin"
    assert settings(root)["timezone"] == {"name": "Europe/Berlin", "offset_min": 60}


@pytest.mark.parametrize("key,clear,said", [("mqtt", "set_mqtt", "MQTT settings cleared"),
                                             ("websocket", "set_websocket", "WebSocket settings cleared")])
def test_an_answer_without_a_section_clears_the_stored_one(tmp_path, srv, key, clear, said):
    root = make_root(tmp_path, srv.ota_url)
    check(root)
    assert key in settings(root)
    getattr(srv, clear)(None)
    out, log = check(root)
    assert out["ok"] and out["written"] == [key] and out[key] is None
    assert key not in settings(root)
    assert said in log


# Idle re-checks in one boot against a server whose websocket token embeds its clock (as
# xiaozhi-esp32-server's does): the sim's write counter per check.
RECHECKS = """
import json
from firmware import config as C, board as B, ota_check
cfg = C.load()
b = B.load(cfg)
b.settings.get("uuid") or b.settings.set("uuid", "00000000-0000-4000-8000-000000000000")
out = []
for i in range(%d):
    w0 = b.settings.writes
    r = ota_check.check(b, cfg)
    out.append([b.settings.writes - w0, r.written, r.websocket["token"]])
print(json.dumps(out))
"""
T0 = 1752119934          # server clock (s) at the first check; each check is 5 minutes later
STEP_S = 300
URL_SWITCH = 25          # the check at which the websocket url itself changes


def _token_server():
    n = [0]

    def handler(req):
        t = T0 + STEP_S * n[0]
        url = "ws://10.0.0.1:8000/xiaozhi/v1/" if n[0] < URL_SWITCH else "ws://10.0.0.2:8000/xiaozhi/v1/"
        n[0] += 1
        body = {"server_time": {"timestamp": t * 1000, "timeZone": "Asia/Shanghai",
                                "timezone_offset": 480},
                "websocket": {"url": url, "token": "c2lnbmF0dXJl.%d" % t},
                "firmware": {"version": "1.0.0", "url": ""}}
        return Reply(200, json.dumps(body), {"Content-Type": "application/json"})
    return start(handler)


def test_idle_rechecks_write_the_changing_token_at_most_once_an_hour(tmp_path):
    port, stop = _token_server()
    try:
        root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % port)
        out = mpy_json(RECHECKS % (URL_SWITCH + 2), cwd=root, timeout=120)
    finally:
        stop()
    writes = [w for w, _, _ in out]
    assert writes[0] == 2 and sorted(out[0][1]) == ["timezone", "websocket"]
    hour = 3600 // STEP_S
    idle = writes[1:URL_SWITCH]                       # two hours of token-only changes
    assert all(sum(idle[i:i + hour]) <= 1 for i in range(len(idle))), writes
    assert 1 <= sum(idle) <= 2, writes
    assert all(o[1] in ([], ["websocket"]) for o in out[1:]), out
    # the fresh token is in RAM on every check, whether it was written or not
    assert [o[2] for o in out] == ["c2lnbmF0dXJl.%d" % (T0 + STEP_S * i) for i in range(len(out))]
    # a changed url is written at once; the token-only change after it waits again
    assert out[URL_SWITCH][:2] == [1, ["websocket"]] and writes[URL_SWITCH + 1] == 0
    stored = settings(root)["websocket"]
    assert stored == {"url": "ws://10.0.0.2:8000/xiaozhi/v1/",
                      "token": "c2lnbmF0dXJl.%d" % (T0 + STEP_S * URL_SWITCH)}


@pytest.mark.parametrize("kind,reason", [
    ("error500", "HTTP 500: Failed to read device auto_update status"),
    ("error400", "HTTP 400: Invalid OTA request"),
    ("success_false", "server refused: Device is not allowed (injected)"),
    ("garbage", "answer is not JSON"),
    ("not_object", "answer is not a JSON object"),
    ("wrong_types", "bad answer: "),
    ("disconnect", "connection closed"),
    ("stall", "timed out"),
    ("truncate", "truncated"),
])
def test_every_server_fault_is_a_clear_error_and_changes_nothing(tmp_path, srv, kind, reason):
    srv.set_mqtt(dict(MQTT, password="other"))  # a good answer would change settings
    root = make_root(tmp_path, srv.ota_url)
    srv.set_mqtt(MQTT)
    check(root)                                 # settle: settings now hold a good answer
    srv.set_mqtt(None)                          # a good answer would now delete mqtt...
    before = settings_bytes(root)
    srv.inject(kind, seconds=3 if kind == "stall" else None)
    out, log = check(root)
    assert not out["ok"]
    assert reason in out["reason"], out
    assert settings_bytes(root) == before and out["writes"] == 0  # ...a bad one changes nothing
    assert "server time applied" not in log


def test_wrong_types_names_the_field(tmp_path, srv):
    root = make_root(tmp_path, srv.ota_url)
    srv.inject("wrong_types")
    out, _ = check(root)
    assert out["reason"].startswith("bad answer: ") and "is not" in out["reason"]


@pytest.mark.parametrize("kind", ["chunked", "redirect", "redirect_abs"])
def test_chunked_answers_and_redirects_work(tmp_path, srv, kind):
    root = make_root(tmp_path, srv.ota_url)
    srv.inject(kind)
    out, _ = check(root)
    assert out["ok"], out
    assert out["activation"]["code"] == srv.device("D4:06:06:B6:A9:FB")["code"]


def test_connect_failure_and_dns_failure(tmp_path):
    root = make_root(tmp_path / "a", "http://127.0.0.1:%d/xiaozhi/ota/" % free_port())
    out, _ = check(root)
    assert not out["ok"] and "connect failed" in out["reason"]
    root = make_root(tmp_path / "b", "http://no-such-host.invalid/xiaozhi/ota/")
    out, _ = check(root)
    assert not out["ok"] and "DNS" in out["reason"]


ANSWER = {"server_time": {"timestamp": 1752119934489, "timeZone": "Asia/Shanghai",
                          "timezone_offset": 480},
          "firmware": {"version": "1.0.0", "url": "http://x/fw.bin"}}


@pytest.mark.parametrize("mode", ["length", "chunked", "close"])
def test_answer_framing_length_chunked_and_until_close(tmp_path, mode):
    body = json.dumps(dict(ANSWER, mqtt={"endpoint": "b:1883"})).encode()
    port, stop = start(lambda req: Reply(200, body, {"Content-Type": "application/json"}, mode=mode,
                                         chunk_size=7))
    try:
        root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % port)
        out, _ = check(root)
        posted = json.loads(stop.requests[-1].body)
    finally:
        stop()
    assert out["ok"], out
    assert out["mqtt"] == {"endpoint": "b:1883"} and settings(root)["mqtt"] == {"endpoint": "b:1883"}
    assert posted["board"]["type"] == "esp-box-3"


def test_redirect_to_another_path_keeps_the_post(tmp_path):
    body = json.dumps(ANSWER).encode()

    def handler(req):
        if req.target == "/old/":
            return redirect("/new/ota/", status=307)
        return Reply(200, body, {"Content-Type": "application/json"}) if req.method == "POST" else Reply(405)
    port, stop = start(handler)
    try:
        root = make_root(tmp_path, "http://127.0.0.1:%d/old/" % port)
        out, _ = check(root)
        targets = [(r.method, r.target) for r in stop.requests]
    finally:
        stop()
    assert out["ok"], out
    assert targets == [("POST", "/old/"), ("POST", "/new/ota/")]


def test_trailing_slash_of_the_configured_url_is_kept(tmp_path):
    port, stop = start(lambda req: Reply(404, b'{"error": "Not Found"}'))
    try:
        root = make_root(tmp_path, "http://127.0.0.1:%d/v1/ota/" % port)
        out, _ = check(root)
        target = stop.requests[-1].target
    finally:
        stop()
    assert target == "/v1/ota/"
    assert out["reason"] == "HTTP 404: Not Found" and out["status"] == 404


def test_html_error_page_gives_a_readable_reason(tmp_path):
    port, stop = start(lambda req: Reply(502, b"<html><body>Bad Gateway</body></html>"))
    try:
        root = make_root(tmp_path, "http://127.0.0.1:%d/ota/" % port)
        out, _ = check(root)
    finally:
        stop()
    assert out["reason"].startswith("HTTP 502: <html><body>Bad Gateway")


# ---- the firmware decision, on the device, without a network --------------------------------

DECIDE = """
import json
from firmware import ota_check

class S:
    def __init__(self, d): self.d = d
    def get(self, k, default=None): return self.d.get(k, default)

out = []
for running, fw, stored in json.loads(%r):
    try:
        r = ota_check.parse_answer({"firmware": fw}, running)
        ota_check.decide(r, S(stored))
        out.append([r.offer, r.firmware_note])
    except ota_check.CheckError as e:
        out.append(["error", e.reason])
print(json.dumps(out))
"""

URL = "http://x/fw.bin"
CASES = [
    ("1.0.0", {"version": "1.0.1", "url": URL}, {}, "offer"),
    ("1.0.0", {"version": "1.1", "url": URL}, {}, "offer"),
    ("1.9.0", {"version": "1.10.0", "url": URL}, {}, "offer"),          # numeric, not text
    ("1.0.0", {"version": "1.0", "url": URL}, {}, None),                # missing parts are 0
    ("1.0.0", {"version": "0.9.9", "url": URL}, {}, None),
    ("1.0.0", {"version": "0.9.9", "url": URL, "force": 1}, {}, "offer"),     # downgrade
    ("1.0.0", {"version": "1.0.0", "url": URL, "force": True}, {}, "offer"),  # reinstall
    ("1.0.0", {"version": "1.0.0", "url": URL, "force": 0}, {}, None),
    ("1.0.0", {"version": "1.x", "url": URL}, {}, "malformed"),
    ("1.0.0", {"version": "", "url": URL, "force": 1}, {}, "malformed"),
    ("1.0.0", {"version": "2.0.0"}, {}, "without a url"),
    ("1.0.0", {"version": "2.0.0", "url": ""}, {}, "without a url"),
    # xiaozhi-esp32-server's "up to date": the device's own version with an empty url
    ("1.0.0", {"version": "1.0.0", "url": ""}, {}, "up to date"),
    ("1.2.0", {"version": "1.0.0"}, {}, "up to date"),
    ("1.0.0", {"version": 2, "url": URL}, {}, "error"),
    ("1.0.0", {"version": "2.0.0", "url": 7}, {}, "error"),
    ("1.0.0", {"version": "2.0.0", "url": URL, "force": "yes"}, {}, "error"),
    # the same (version, url) installed before: it rolled back (or would loop) -- never again
    ("1.0.0", {"version": "2.0.0", "url": URL}, {"ota_last_install": {"version": "2.0.0", "url": URL}}, "before"),
    ("1.0.0", {"version": "2.0.0", "url": URL + "?v=2"}, {"ota_last_install": {"version": "2.0.0", "url": URL}}, "offer"),
    ("1.0.0", {"version": "1.0.0", "url": URL, "force": 1}, {"ota_last_install": {"version": "1.0.0", "url": URL}}, "before"),
    ("garbage", {"version": "2.0.0", "url": URL}, {}, None),             # bad running: only forced
    ("garbage", {"version": "2.0.0", "url": URL, "force": 1}, {}, "offer"),
]


def test_firmware_offer_decision():
    out = mpy_json(DECIDE % json.dumps([c[:3] for c in CASES]))
    for (running, fw, stored, want), (offer, note) in zip(CASES, out):
        where = (running, fw, stored, offer, note)
        if want == "offer":
            assert isinstance(offer, dict) and offer["url"] == fw["url"], where
            assert offer["version"] == fw["version"]
            assert offer["force"] == (fw.get("force") in (1, True))
        elif want == "error":
            assert offer == "error" and "firmware." in note, where
        else:
            assert offer is None, where
            if want:
                assert want in note, where


# ---- TLS as config.json sets it up (the client's own TLS tests live in test_http_client) ----

def _tls_material(d):
    import datetime
    import ssl
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, pub, signer, ca):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30)))
        if ca:
            b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        else:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return b.sign(signer, hashes.SHA256())
    pem = serialization.Encoding.PEM
    ca_key, other_key, key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    (d / "ca.pem").write_bytes(cert("ota test CA", "ota test CA", ca_key.public_key(), ca_key, True).public_bytes(pem))
    (d / "other.pem").write_bytes(cert("other CA", "other CA", other_key.public_key(), other_key, True).public_bytes(pem))
    (d / "srv.pem").write_bytes(cert("localhost", "ota test CA", key.public_key(), ca_key, False).public_bytes(pem))
    (d / "srv.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / "srv.pem"), str(d / "srv.key"))
    return ctx


def test_https_ota_url_with_the_configured_ca_file(tmp_path):
    ctx = _tls_material(tmp_path)
    s = ota_server.run_in_thread(ssl_context=ctx)
    url = "https://localhost:%d/xiaozhi/ota/" % s.port
    try:
        good = make_root(tmp_path / "good", url, tls={"verify": True, "ca_file": str(tmp_path / "ca.pem")})
        out, _ = check(good)
        assert out["ok"], out
        bad = make_root(tmp_path / "bad", url, tls={"verify": True, "ca_file": str(tmp_path / "other.pem")})
        out, _ = check(bad)
        assert not out["ok"] and "certificate verification failed" in out["reason"], out
        off = make_root(tmp_path / "off", url, tls={"verify": False, "ca_file": None})
        out, log = check(off)
        assert out["ok"] and "verification is OFF" in log
    finally:
        s.stop()


def test_a_slow_loris_answer_ends_at_the_deadline_with_a_log_line(tmp_path):
    # 16000 bytes at 1 byte a second: each read gets its byte in time, so only the request
    # deadline (http_deadline_s) ends the check -- instead of holding it for hours.
    import time

    def handler(req):
        req.conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 16000\r\n\r\n{")
        for _ in range(16000):
            time.sleep(1)
            req.conn.sendall(b" ")
    port, stop = start(handler)
    try:
        root = make_root(tmp_path, "http://127.0.0.1:%d/xiaozhi/ota/" % port, http_deadline_s=3)
        t0 = time.time()
        out, log = check(root)
        took = time.time() - t0
    finally:
        stop()
    assert out == {"ok": False, "reason": "no complete answer within 3 s (request deadline)",
                   "status": 200, "writes": 0, "time_ms": out["time_ms"]}
    assert "W http: no complete answer within 3 s (request deadline); giving up" in log
    assert took < 3 + 2.5, took
