"""firmware/http_client.py under the real MicroPython unix port, against in-process test servers."""
import datetime
import json
import os
import ssl
import time

import pytest

from conftest import free_port, mpy_json
from http_fault_server import Reply, redirect, start

PRE = r"""
import json, gc, binascii, time
from firmware import http_client as h

def body(r, n=7):
    buf = bytearray(n)
    mv = memoryview(buf)
    out = bytearray()
    while True:
        k = r.readinto(mv)
        if not k:
            break
        out.extend(mv[:k])
    return out

def hexb(b):
    return binascii.hexlify(b).decode()

def err(f):
    try:
        f()
        return None
    except h.Timeout as e:
        return ["Timeout", e.reason, e.status]
    except h.HttpError as e:
        return ["HttpError", e.reason, e.status]

def out(d):
    print(json.dumps(d))
"""


def run(code, **kw):
    return mpy_json(PRE + code, **kw)


@pytest.fixture
def serve():
    stops = []

    def _serve(handler, tls=None):
        port, stop = start(handler, tls=tls)
        stops.append(stop)
        return port, stop
    yield _serve
    for s in stops:
        s()


BLOB = bytes((i * 7 + 3) % 256 for i in range(1000))


def test_content_length_body(serve):
    port, stop = serve(lambda req: Reply(200, BLOB, headers={"X-Custom": "Yes"}))
    res = run("""
r = h.request("GET", "http://127.0.0.1:%d/f")
b = body(r)
out({"status": r.status, "reason": r.reason, "length": r.length, "hdr": r.headers.get("x-custom"),
     "body": hexb(b), "after": r.readinto(bytearray(4))})
""" % port)
    assert res["status"] == 200 and res["reason"] == "OK"
    assert res["length"] == len(BLOB)
    assert res["hdr"] == "Yes"
    assert bytes.fromhex(res["body"]) == BLOB
    assert res["after"] == 0
    req = stop.requests[0]
    assert req.method == "GET" and req.target == "/f"
    assert req.headers["host"] == "127.0.0.1:%d" % port
    assert req.headers["connection"] == "close"


def test_chunked_body_with_extensions_and_trailers(serve):
    port, _ = serve(lambda req: Reply(200, BLOB, mode="chunked", chunk_size=97, chunk_ext=True,
                                      trailers={"X-Checksum": "abc", "X-More": "1"}))
    res = run("""
r = h.request("GET", "http://127.0.0.1:%d/c")
b = body(r, 64)
out({"length": r.length, "body": hexb(b), "te": r.headers.get("transfer-encoding")})
""" % port)
    assert res["length"] is None
    assert res["te"] == "chunked"
    assert bytes.fromhex(res["body"]) == BLOB


def test_body_until_close(serve):
    port, _ = serve(lambda req: Reply(200, BLOB, mode="close"))
    res = run("""
r = h.request("GET", "http://127.0.0.1:%d/x")
out({"length": r.length, "body": hexb(body(r, 300))})
""" % port)
    assert res["length"] is None
    assert bytes.fromhex(res["body"]) == BLOB


@pytest.mark.parametrize("code", [301, 302, 307])
@pytest.mark.parametrize("absolute", [False, True])
def test_redirects(serve, code, absolute):
    def handler(req):
        if req.target == "/a/start":
            return redirect("http://127.0.0.1:%d/a/hop" % port if absolute else "/a/hop", code)
        if req.target == "/a/hop":
            return redirect("final?x=1", code)  # relative to /a/
        return Reply(200, "%s %s %s" % (req.method, req.target, req.body.decode()))
    port, stop = serve(handler)
    res = run("""
r = h.request("POST", "http://127.0.0.1:%d/a/start", body="payload")
out({"status": r.status, "body": r.read_all().decode(), "url": r.url})
""" % port)
    assert res["status"] == 200
    # 301/302/307 keep the method and body (as ESP-IDF's client does)
    assert res["body"] == "POST /a/final?x=1 payload"
    assert res["url"] == "http://127.0.0.1:%d/a/final?x=1" % port
    assert [r.target for r in stop.requests] == ["/a/start", "/a/hop", "/a/final?x=1"]


def test_303_becomes_get_without_body(serve):
    def handler(req):
        if req.target == "/post":
            return redirect("/result", 303)
        return Reply(200, "%s %r %s" % (req.method, req.body, req.headers.get("content-type")))
    port, _ = serve(handler)
    res = run("""
r = h.request("POST", "http://127.0.0.1:%d/post", body={"a": 1})
out(r.read_all().decode())
""" % port)
    assert res == "GET b'' None"


def test_too_many_redirects(serve):
    port, stop = serve(lambda req: redirect("/loop"))
    res = run("""
out(err(lambda: h.request("GET", "http://127.0.0.1:%d/loop", max_redirects=5)))
""" % port)
    assert res[0] == "HttpError" and res[1] == "too many redirects"
    assert len(stop.requests) == 6


@pytest.mark.parametrize("status", [404, 500])
def test_error_status_returned_with_body(serve, status):
    port, _ = serve(lambda req: Reply(status, json.dumps({"error": "nope"})))
    res = run("""
r = h.request("POST", "http://127.0.0.1:%d/x", body={})
out({"status": r.status, "json": r.json()})
""" % port)
    assert res == {"status": status, "json": {"error": "nope"}}


def test_truncated_content_length_body(serve):
    port, _ = serve(lambda req: Reply(200, BLOB, close_after=300))
    res = run("""
r = h.request("GET", "http://127.0.0.1:%d/x")
buf = bytearray(100)
got = 0
e = None
try:
    while True:
        n = r.readinto(buf)
        if not n:
            break
        got += n
except h.HttpError as ex:
    e = ex.reason
out({"got": got, "err": e})
""" % port)
    assert res == {"got": 300, "err": "body truncated"}


def test_content_length_lie_detected_by_read_all(serve):
    port, _ = serve(lambda req: Reply(200, b"short", content_length=50))
    res = run("""
r = h.request("GET", "http://127.0.0.1:%d/x")
out(err(r.read_all))
""" % port)
    assert res[:2] == ["HttpError", "body truncated"]


@pytest.mark.parametrize("cut", [5, 60, 104])  # inside a size line, inside data, before the last chunk
def test_truncated_chunked_body(serve, cut):
    port, _ = serve(lambda req: Reply(200, BLOB[:200], mode="chunked", chunk_size=50, close_after=cut))
    res = run("""
r = h.request("GET", "http://127.0.0.1:%d/x")
out(err(lambda: body(r, 64)))
""" % port)
    assert res[:2] == ["HttpError", "body truncated"]


def test_bad_chunk_size(serve):
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    port, _ = serve(lambda req: raw)
    res = run("""
r = h.request("GET", "http://127.0.0.1:%d/x")
out(err(lambda: body(r)))
""" % port)
    assert res[:2] == ["HttpError", "bad chunk size"]


@pytest.mark.parametrize("where", ["headers", "body"])
def test_stalled_server_times_out(serve, where):
    if where == "headers":
        reply = Reply(200, BLOB, stall_after=20, count_from="start")
    else:
        reply = Reply(200, BLOB, stall_after=100)
    port, _ = serve(lambda req: reply)
    t0 = time.monotonic()
    res = run("""
t = time.ticks_ms()
def go():
    r = h.request("GET", "http://127.0.0.1:%d/x", timeout_ms=600)
    body(r, 64)
e = err(go)
out({"err": e, "ms": time.ticks_diff(time.ticks_ms(), t)})
""" % port)
    assert res["err"][0] == "Timeout", res
    assert 500 <= res["ms"] < 2500, res
    assert time.monotonic() - t0 < 10


def test_slow_drip_headers_bounded_by_timeout(serve):
    """A server dripping header bytes slower than the timeout overall still trips the deadline."""
    def handler(req):
        for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
            req.conn.sendall(bytes([b]))
            time.sleep(0.05)
    port, _ = serve(handler)
    res = run("""
t = time.ticks_ms()
e = err(lambda: h.request("GET", "http://127.0.0.1:%d/x", timeout_ms=500))
out({"err": e, "ms": time.ticks_diff(time.ticks_ms(), t)})
""" % port)
    assert res["err"][0] == "Timeout"
    assert res["ms"] < 2000


def test_connect_timeout():
    """A listener whose accept queue is full drops SYNs (Linux): the connect must time out."""
    import socket
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        time.sleep(0.1)
        res = run("""
t = time.ticks_ms()
e = err(lambda: h.request("GET", "http://127.0.0.1:%d/x", timeout_ms=600))
out({"err": e, "ms": time.ticks_diff(time.ticks_ms(), t)})
""" % port)
    finally:
        for s in fillers:
            s.close()
        ls.close()
    assert res["err"][0] == "Timeout", res
    assert 500 <= res["ms"] < 2500, res


def test_connection_refused():
    port = free_port()
    res = run("""out(err(lambda: h.request("GET", "http://127.0.0.1:%d/x")))""" % port)
    assert res[0] == "HttpError" and res[1].startswith("connect failed"), res
    assert "ECONNREFUSED" in res[1]


def test_dns_failure():
    res = run("""out(err(lambda: h.request("GET", "http://nonexistent.invalid/x?secret=1")))""")
    assert res[0] == "HttpError" and res[1].startswith("connect failed"), res
    assert "secret" not in res[1]


def test_json_garbage_and_limit(serve):
    def handler(req):
        if req.target == "/garbage":
            return Reply(200, b"<html>not json")
        if req.target == "/binary":
            return Reply(200, b"\xff\xfe\x00{")
        return Reply(200, b"[" + b"1," * 5000 + b"1]", mode="chunked", chunk_size=1000)
    port, _ = serve(handler)
    res = run("""
u = "http://127.0.0.1:%d" % {port}
out([err(lambda: h.request("GET", u + "/garbage").json()),
     err(lambda: h.request("GET", u + "/binary").json()),
     err(lambda: h.request("GET", u + "/big").read_all(limit=1000)),
     len(h.request("GET", u + "/big").json(limit=20000))])
""".replace("{port}", str(port)))
    assert res[0][:2] == ["HttpError", "invalid JSON"]
    assert res[1][:2] == ["HttpError", "invalid JSON"]
    assert res[2][:2] == ["HttpError", "body too large"]
    assert res[3] == 5001


def test_range_header_sent(serve):
    def handler(req):
        start_at = int(req.headers["range"].split("=")[1].rstrip("-"))
        return Reply(206, BLOB[start_at:],
                     headers={"Content-Range": "bytes %d-%d/%d" % (start_at, len(BLOB) - 1, len(BLOB))})
    port, stop = serve(handler)
    res = run("""
r = h.request("GET", "http://127.0.0.1:%d/fw.bin", range_start=600)
out({"status": r.status, "length": r.length, "body": hexb(body(r, 128))})
""" % port)
    assert stop.requests[0].headers["range"] == "bytes=600-"
    assert res["status"] == 206 and res["length"] == 400
    assert bytes.fromhex(res["body"]) == BLOB[600:]


def test_presigned_query_reaches_server_verbatim(serve):
    target = ("/bucket/fw%20v2.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc%2Fdef"
              "&X-Amz-Date=20261123T101010Z&X-Amz-Credential=AK%2F2026%2Fus%2Fs3%2Faws4_request"
              "&empty=&plus=a+b")

    def handler(req):
        if req.target == "/start":
            return redirect("http://127.0.0.1:%d%s" % (port, target))
        return Reply(200, b"ok")
    port, stop = serve(handler)
    res = run("""
r = h.request("GET", "http://127.0.0.1:%d%s")
r2 = h.request("GET", "http://127.0.0.1:%d/start")
out([r.read_all().decode(), r2.read_all().decode()])
""" % (port, target, port))
    assert res == ["ok", "ok"]
    assert [r.target for r in stop.requests] == [target, "/start", target]
    assert stop.requests[0].raw_head.split(b"\r\n")[0] == ("GET %s HTTP/1.1" % target).encode()


def test_post_json_and_headers(serve):
    port, stop = serve(lambda req: Reply(200, b"{}"))
    run("""
r = h.request("post", "http://127.0.0.1:%d/xiaozhi/ota/", body={"a": [1, "x"]},
              headers={"Device-Id": "AA:BB", "User-Agent": "esp-box-3/1.0.0"})
out(r.json())
""" % port)
    req = stop.requests[0]
    assert req.method == "POST" and req.target == "/xiaozhi/ota/"
    assert json.loads(req.body) == {"a": [1, "x"]}
    assert req.headers["content-type"] == "application/json"
    assert req.headers["content-length"] == str(len(req.body))
    assert req.headers["device-id"] == "AA:BB"
    assert req.headers["user-agent"] == "esp-box-3/1.0.0"


def test_header_limits(serve):
    def handler(req):
        if req.target == "/long":
            return Reply(200, b"x", headers={"X-Long": "a" * 2000})
        return Reply(200, b"x", headers=dict(("X-H%d" % i, "v") for i in range(100)))
    port, _ = serve(handler)
    res = run("""
u = "http://127.0.0.1:%d" % {port}
out([err(lambda: h.request("GET", u + "/long")), err(lambda: h.request("GET", u + "/many"))])
""".replace("{port}", str(port)))
    assert res[0][:2] == ["HttpError", "response line too long"]
    assert res[1][:2] == ["HttpError", "too many headers"]


def test_parse_url_and_resolve():
    res = run("""
out([h.parse_url("http://example.com"), h.parse_url("HTTPS://ex.com:8443/p/a?q=%2F&b#frag"),
     h.parse_url("http://[::1]:81?x"), err(lambda: h.parse_url("ftp://x/")),
     err(lambda: h.parse_url("http://u:pw@x/")), err(lambda: h.parse_url("http://x:99999/")),
     h.resolve("http://a:1/x/y?q", "../z?k=%2F"), h.resolve("https://a/x/y", "//b/c"),
     h.resolve("http://a/x/y?q", "?n"), h.resolve("http://a/x/y", "/abs#f")])
""")
    assert res[0] == ["http", "example.com", 80, "/"]
    assert res[1] == ["https", "ex.com", 8443, "/p/a?q=%2F&b"]
    assert res[2] == ["http", "::1", 81, "/?x"]
    assert res[3][:2] == ["HttpError", "unsupported URL scheme"]
    assert res[4][0] == "HttpError" and "pw" not in res[4][1]
    assert res[5][:2] == ["HttpError", "bad URL port"]
    assert res[6:] == ["http://a:1/z?k=%2F", "https://b/c", "http://a/x/y?n", "http://a/abs"]


ALLOC_CODE = """
r = h.request("GET", "http://127.0.0.1:%d/big")
buf = bytearray(512)
mv = memoryview(buf)[:500]
for i in range(10):
    r.readinto(mv)
gc.collect()
gc.disable()
m0 = gc.mem_alloc()
total = 0
for i in range(100):
    total += r.readinto(mv)
m1 = gc.mem_alloc()
gc.enable()
out({"delta": m1 - m0, "total": total})
"""


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_readinto_allocates_nothing_in_steady_state(serve, mode):
    port, _ = serve(lambda req: Reply(200, os.urandom(200000), mode=mode, chunk_size=1000))
    res = run(ALLOC_CODE % port)
    assert res["total"] > 40000
    assert res["delta"] < 64, res


# --- TLS ---------------------------------------------------------------------------------------

def _make_ca(name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    ca_key, ca_cert = _make_ca("http_client test CA")
    _, other_ca = _make_ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    pem = serialization.Encoding.PEM
    (d / "srv.pem").write_bytes(cert.public_bytes(pem))
    (d / "srv.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / "srv.pem"), str(d / "srv.key"))
    return {"ctx": ctx, "ca": ca_cert.public_bytes(pem).decode(),
            "other": other_ca.public_bytes(pem).decode(),
            "ca_der": ca_cert.public_bytes(serialization.Encoding.DER)}


TLS_CODE = """
def go(tls):
    r = h.request("GET", "https://localhost:%d/secure?sig=abc", tls=tls, timeout_ms=5000)
    return [r.status, r.read_all().decode()]
res = []
for tls in TLS_CASES:
    try:
        res.append(go(tls))
    except h.HttpError as e:
        res.append(["error", e.reason])
out(res)
"""


def test_tls(serve, tls_material):
    port, stop = serve(lambda req: Reply(200, b"secret ok"), tls=tls_material["ctx"])
    m = tls_material
    cases = ("TLS_CASES = [{'verify': True, 'ca': %r}, {'verify': True, 'ca': %r}, "
             "{'verify': False, 'ca': None}, {'verify': True, 'ca': %r + %r}, "
             "{'verify': True, 'ca': %r}, {'verify': True, 'ca': None}, None]\n"
             % (m["ca"], m["other"], m["other"], m["ca"], m["ca_der"]))
    res = run(cases + TLS_CODE % port)
    assert res[0] == [200, "secret ok"]                     # verified with the right CA
    assert res[1][0] == "error" and "verif" in res[1][1]    # a different CA: rejected
    assert "sig=abc" not in res[1][1]
    assert res[2] == [200, "secret ok"]                     # verification off
    assert res[3] == [200, "secret ok"]                     # a bundle that holds the CA
    assert res[4] == [200, "secret ok"]                     # DER CA
    assert res[5] == ["error", "tls: verification on but no CA configured"]
    assert res[6] == res[5]
    assert [r.target for r in stop.requests] == ["/secure?sig=abc"] * 4


def test_tls_wrong_hostname_rejected(serve, tls_material):
    port, _ = serve(lambda req: Reply(200, b"x"), tls=tls_material["ctx"])
    # the cert names only "localhost"; reaching the same server as 127.0.0.1 must fail
    res = run("""
out(err(lambda: h.request("GET", "https://127.0.0.1:%d/", tls={"verify": True, "ca": %r})))
""" % (port, tls_material["ca"]))
    assert res[0] == "HttpError" and "verif" in res[1], res


def test_verify_off_warns_once(serve, tls_material):
    port, _ = serve(lambda req: Reply(200, b"x"), tls=tls_material["ctx"])
    from conftest import run_mpy
    out = run_mpy(PRE + """
for i in range(3):
    h.request("GET", "https://127.0.0.1:%d/", tls={"verify": False}).read_all()
""" % port).stdout
    assert out.count("verification is OFF") == 1


def test_multi_mib_download_in_small_heap(serve):
    """3 MiB streamed through one 4 KiB buffer in a 96 KiB heap: memory does not grow with size."""
    import hashlib
    data = os.urandom(3 * 1024 * 1024)
    port, _ = serve(lambda req: Reply(200, data, mode="chunked", chunk_size=4096))
    res = run("""
import hashlib
r = h.request("GET", "http://127.0.0.1:%d/fw")
buf = bytearray(4096)
mv = memoryview(buf)
m = hashlib.sha256()
n = 0
while True:
    k = r.readinto(buf)
    if not k:
        break
    m.update(mv[:k])
    n += k
out([n, hexb(m.digest())])
""" % port, heapsize="96k")
    assert res == [len(data), hashlib.sha256(data).hexdigest()]


def _drip(head, body, every_s):
    """A handler that sends `head` at once, then `body` one byte every `every_s` seconds."""
    def handler(req):
        req.conn.sendall(head)
        for b in body:
            time.sleep(every_s)
            req.conn.sendall(bytes([b]))
    return handler


def test_deadline_bounds_a_slow_loris_body(serve):
    # 1 byte every 0.3 s never trips a per-read timeout, and a blocking readinto would wait for
    # its whole buffer: only the request deadline ends it, on time and saying so.
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 16000\r\n\r\n"
    port, _ = serve(_drip(head, b"x" * 16000, 0.3))
    res = run("""
t = time.ticks_ms()
def go():
    r = h.request("GET", "http://127.0.0.1:%d/x", timeout_ms=1000, deadline_ms=2000)
    r.read_all(16384)
out({"err": err(go), "ms": time.ticks_diff(time.ticks_ms(), t)})
""" % port)
    assert res["err"][:2] == ["Timeout", "no complete answer within 2 s (request deadline)"]
    assert 2000 <= res["ms"] < 2600, res


def test_deadline_also_bounds_slow_headers_and_a_fast_answer_is_untouched(serve, tls_material):
    port, _ = serve(_drip(b"", b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100, 0.1))
    fast, _ = serve(lambda req: Reply(200, BLOB, mode="chunked", chunk_size=333))
    tport, _ = serve(lambda req: Reply(200, BLOB), tls=tls_material["ctx"])
    res = run("""
t = time.ticks_ms()
e = err(lambda: h.request("GET", "http://127.0.0.1:%d/x", timeout_ms=5000, deadline_ms=1000))
ms = time.ticks_diff(time.ticks_ms(), t)
ok = h.request("GET", "http://127.0.0.1:%d/x", deadline_ms=5000).read_all(len(%r) + 1)
tls = h.request("GET", "https://localhost:%d/x", deadline_ms=5000,
                tls={"verify": True, "ca": %r}).read_all(len(%r) + 1)
out({"err": e, "ms": ms, "ok": hexb(ok), "tls": hexb(tls)})
""" % (port, fast, BLOB, tport, tls_material["ca"], BLOB))
    assert res["err"][0] == "Timeout" and 900 <= res["ms"] < 1600, res
    assert res["ok"] == BLOB.hex() and res["tls"] == BLOB.hex()


def test_min_rate_fails_a_trickle_and_passes_a_steady_body(serve):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
    slow, _ = serve(_drip(head, b"y" * 5000, 0.05))       # ~20 B/s
    fine, _ = serve(lambda req: Reply(200, BLOB))
    res = run("""
t = time.ticks_ms()
def go():
    r = h.request("GET", "http://127.0.0.1:%d/fw", timeout_ms=5000, min_rate=(100, 1000))
    body(r, 4096)
e = err(go)
ms = time.ticks_diff(time.ticks_ms(), t)
r = h.request("GET", "http://127.0.0.1:%d/fw", timeout_ms=5000, min_rate=(100, 1000))
out({"err": e, "ms": ms, "ok": hexb(body(r, 4096))})
""" % (slow, fine))
    assert res["err"][0] == "Timeout" and res["err"][1].startswith("download too slow: "), res
    assert "(minimum 100 B/s)" in res["err"][1]
    assert 1000 <= res["ms"] < 1600, res
    assert res["ok"] == BLOB.hex()


def test_https_to_http_redirect_is_refused_unless_allowed(serve, tls_material):
    # The downgrade would send the request, and take the answer (MQTT credentials), in clear.
    plain, plain_stop = serve(lambda req: Reply(200, b"in clear"))
    tport, _ = serve(lambda req: redirect("http://127.0.0.1:%d/ota/" % plain), tls=tls_material["ctx"])
    res = run("""
def go(allow):
    tls = {"verify": True, "ca": %r, "allow_http_redirect": allow}
    return h.request("POST", "https://localhost:%d/ota/", body={"a": 1}, tls=tls).read_all()
res = [err(lambda: go(False)), h.HttpError("x").permanent]
try:
    go(False)
except h.HttpError as e:
    res.append(e.permanent)
res.append(go(True).decode())
out(res)
""" % (tls_material["ca"], tport))
    assert res[0] == ["HttpError", "https -> http redirect refused (tls.allow_http_redirect off)", 302]
    assert res[1:] == [False, True, "in clear"]
    assert len(plain_stop.requests) == 1          # only the allowed one reached the plain server


def test_permanent_errors_are_marked_so():
    res = run("""
res = []
for u in ("http://user:pw@127.0.0.1/", "ftp://127.0.0.1/x", "http://127.0.0.1:99999/", "nonsense"):
    try:
        h.request("GET", u)
    except h.HttpError as e:
        res.append([e.reason, e.permanent])
out(res)
""")
    assert res == [["credentials in URL not supported", True], ["unsupported URL scheme", True],
                   ["bad URL port", True], ["bad URL", True]]


@pytest.mark.parametrize("where", ["headers", "body"])
def test_stalled_tls_server_times_out(serve, tls_material, where):
    # The unix port's timed-out socket read is EAGAIN, which mbedtls turns into WANT_READ (no
    # data, readinto -> None). The esp32 port reports ETIMEDOUT instead (modsocket.c:668), which
    # comes back negated as OSError(-116): the unit test below covers that.
    if where == "headers":
        reply = Reply(200, BLOB, stall_after=20, count_from="start")
    else:
        reply = Reply(200, BLOB, stall_after=100)
    port, _ = serve(lambda req: reply, tls=tls_material["ctx"])
    res = run("""
t = time.ticks_ms()
def go():
    r = h.request("GET", "https://localhost:%d/x", timeout_ms=600, tls={"verify": True, "ca": %r})
    body(r, 64)
e = err(go)
out({"err": e, "ms": time.ticks_diff(time.ticks_ms(), t)})
""" % (port, tls_material["ca"]))
    assert res["err"][0] == "Timeout", res
    assert 500 <= res["ms"] < 2500, res


def test_esp32_timeout_errnos_are_timeouts():
    # esp32: ETIMEDOUT 116 (newlib), plain and negated through TLS; Linux: 110; EAGAIN 11.
    res = run("""
from firmware import http_errors
out([type(http_errors.io_error(OSError(n), "read")).__name__ for n in (-110, -116, 110, 116, 11, 104, -0x7880)])
""")
    assert res == ["Timeout"] * 5 + ["HttpError", "HttpError"]
