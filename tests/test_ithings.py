"""firmware/ithings.py and ithings_push.py (iThings OTA protocol, pure) under the real MicroPython
unix port."""
import json

from conftest import mpy_json

MD5 = "a111bb893cbd81d5b2b08e0c079c6be1"
BASE = "http://10.0.0.5:7777"
PRESIGNED = ("/api/v1/oss/ithings-private/productManage/ota/26wrGK4KbrW.zip?X-Amz-Algorithm="
             "AWS4-HMAC-SHA256&X-Amz-Credential=ithings%2F20230621%2Fus-east-1%2Fs3%2Faws4_request"
             "&X-Amz-Date=20230621T025209Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=0f1e2d")


def run_push(msgs, running="1.0.0", in_progress=None, schemes=("https", "http"), base=BASE,
             max_size=0x300000, board="esp-box-3", module="default"):
    """parse_push for each message (dict or raw str) under MicroPython -> list of result dicts."""
    code = """
import json
from firmware import ithings_push
msgs = json.loads(%r)
out = []
for m in msgs:
    r = ithings_push.parse_push(m if isinstance(m, dict) else m.encode(), %r, %r, %r, %r, %r, %r, %r)
    d = {"kind": r.kind, "token": r.token, "version": r.version}
    if r.kind == "push":
        d.update(url=r.url, size=r.size, md5=r.md5, name=r.name, force=r.force, method=r.method,
                 delta=r.delta, sha256=r.sha256)
    else:
        d["reason"] = r.reason
        if r.kind == "reject":
            d["code"] = r.code
    out.append(d)
print(json.dumps(out))
""" % (json.dumps(msgs), running, in_progress, list(schemes), base, max_size, board, module)
    return mpy_json(code)


def single(**data_over):
    data = {"version": "1.1.0", "isDiff": 1, "signMethod": "md5", "extra": "", "size": 16600,
            "name": "app.bin", "fileUrl": "https://oss.example.com/fw/app.bin?X-Amz-Signature=ab%2Fcd",
            "fileMd5": MD5, "signature": MD5}
    data.update(data_over)
    for k in [k for k, v in data.items() if v is None]:
        del data[k]
    return {"method": "upgrade", "msgToken": "tok-1", "timestamp": 1700000000000, "code": 200,
            "data": data}


def seed():
    """The seed's example push, verbatim apart from the file names (the seed ships .zip)."""
    return {"method": "reportInfoReply", "clientToken": "PPXLSKBUPZ-444",
            "timestamp": 1687315938340, "code": 200, "status": "成功",
            "data": {"files": [
                {"name": "xx.bin", "signature": MD5, "size": 16600, "url": PRESIGNED},
                {"name": "xx2.zip", "signature": MD5, "size": 16600, "url": PRESIGNED}],
                "id": 1, "isDiff": 1, "signMethod": "md5", "version": "1.0.1"}}


def test_three_push_shapes_are_admitted():
    multi = single()
    f = {k: multi["data"].pop(k) for k in ("size", "name", "fileUrl", "fileMd5", "signature")}
    multi["data"]["files"] = [{"name": "bootloader.bin", "size": 100, "fileUrl": "https://x/b",
                               "fileMd5": MD5}, f]
    r = run_push([single(), multi, seed()])
    assert [x["kind"] for x in r] == ["push"] * 3
    assert r[0]["url"] == "https://oss.example.com/fw/app.bin?X-Amz-Signature=ab%2Fcd"
    assert r[0]["size"] == 16600 and r[0]["md5"] == MD5 and r[0]["token"] == "tok-1"
    assert r[1]["name"] == "app.bin" and r[1]["url"] == r[0]["url"]
    # The seed form: clientToken, relative url resolved against http_base verbatim (no re-encoding).
    assert r[2]["token"] == "PPXLSKBUPZ-444" and r[2]["version"] == "1.0.1"
    assert r[2]["url"] == BASE + PRESIGNED
    assert r[2]["name"] == "xx.bin" and r[2]["method"] == "reportInfoReply"


def test_diff_pushes_in_all_three_shapes_are_deltas():
    multi = single(isDiff=2)
    f = {k: multi["data"].pop(k) for k in ("size", "name", "fileUrl", "fileMd5", "signature")}
    multi["data"]["files"] = [f]
    s = seed()
    s["data"]["isDiff"] = "2"
    r = run_push([single(isDiff=2), multi, s, single(), single(isDiff="1")])
    assert [x["kind"] for x in r] == ["push"] * 5
    assert [x["delta"] for x in r] == [True, True, True, False, False]
    assert r[1]["url"] == r[0]["url"] and r[2]["url"] == BASE + PRESIGNED


def test_sign_method_any_case_and_string_numbers():
    r = run_push([single(signMethod="MD5"), single(signMethod="Md5", isDiff="1", size="123"),
                  single(fileMd5=MD5.upper(), signature=None)])
    assert [x["kind"] for x in r] == ["push"] * 3
    assert r[1]["size"] == 123
    assert r[2]["md5"] == MD5


def test_sign_method_sha256_carries_the_signature_as_the_files_sha256():
    sha = "c0ffee" * 10 + "abcd"
    r = run_push([single(signMethod="SHA256", signature=sha.upper(), fileMd5=None),
                  single(signMethod="sha256", signature=sha)])
    assert [x["kind"] for x in r] == ["push", "push"]
    assert r[0]["sha256"] == sha and r[0]["md5"] is None
    assert r[1]["sha256"] == sha and r[1]["md5"] == MD5      # a fileMd5 beside it: checked too


def test_admission_rejections_and_codes():
    cases = [
        (single(isDiff=3), -4, "isDiff 3"),
        (single(isDiff="full"), -4, "isDiff full"),
        (single(signMethod="sha1"), -4, "signMethod"),
        (single(signMethod="SHA256"), -4, "bad sha256"),           # signature holds an md5
        (single(version=None), -4, "version"),
        (single(size=0), -4, "size"),
        (single(size=-5), -4, "size"),
        (single(size=None), -4, "size"),
        (single(size=0x300001), -4, "exceeds partition"),
        (single(fileMd5=None, signature=None), -4, "md5"),
        (single(fileMd5="xyz", signature=None), -4, "md5"),
        (single(fileMd5=MD5, signature="b" * 32), -4, "differ"),
        (single(name="firmware.zip"), -4, ".bin"),
        (single(module="wifi-module"), -4, "module"),
        (single(fileUrl="ftp://h/app.bin"), -1, "scheme"),
        (single(fileUrl="file:///etc/passwd"), -1, "scheme"),
        (single(fileUrl=None), -1, "URL"),
        (single(fileUrl="app.bin"), -1, "bad file URL"),
        (single(fileUrl="http://h/a b.bin"), -1, "bad file URL"),
        ({"method": "upgrade", "msgToken": "t", "data": "nope"}, -4, "data"),
    ]
    multi_no_app = seed()
    for f in multi_no_app["data"]["files"]:
        f["name"] = f["name"].replace(".bin", ".zip")
    cases.append((multi_no_app, -4, "no single app image"))
    ambiguous = seed()
    ambiguous["data"]["files"][1]["name"] = "other.bin"
    cases.append((ambiguous, -4, "no single app image"))
    r = run_push([c[0] for c in cases])
    for (msg, code, word), got in zip(cases, r):
        assert got["kind"] == "reject", (msg, got)
        assert got["code"] == code, (msg, got)
        assert word.lower() in got["reason"].lower(), (word, got)
        assert got["token"] == (msg.get("msgToken") or msg.get("clientToken"))


def test_scheme_policy_and_relative_url_without_base():
    r = run_push([single(fileUrl="http://h/app.bin"), single(fileUrl="HTTPS://h/app.bin")],
                 schemes=["https"])
    assert r[0]["kind"] == "reject" and r[0]["code"] == -1 and "http" in r[0]["reason"]
    assert r[1]["kind"] == "push"
    r = run_push([seed()], base=None)
    assert r[0]["kind"] == "reject" and r[0]["code"] == -1 and "http_base" in r[0]["reason"]


def test_board_named_file_wins_among_several_app_images():
    m = seed()
    m["data"]["files"] = [
        {"name": "esp32-c3-app.bin", "signature": MD5, "size": 10, "url": "/a?x=1"},
        {"name": "esp-box-3-app.bin", "signature": MD5, "size": 20, "url": "/b?x=2"},
        {"name": "partition-table.bin", "signature": MD5, "size": 30, "url": "/c"}]
    r = run_push([m])
    assert r[0]["kind"] == "push" and r[0]["size"] == 20 and r[0]["url"] == BASE + "/b?x=2"


def test_ignored_messages():
    r = run_push([
        "not json", "[1,2]", {"method": "property", "msgToken": "a"},
        {"method": "reportInfoReply", "msgToken": "a", "code": 200, "data": {}},
        {"method": "upgrade", "data": single()["data"]},                  # no token
        dict(single(), code=500),
        single(version="1.0.0"),                                          # already running
        single(version="v1.0"),                                           # the same, spelt differently
    ])
    assert [x["kind"] for x in r] == ["ignore"] * 8
    assert "already running" in r[6]["reason"] and "already running" in r[7]["reason"]
    # Forced re-install of the running version is a push.
    assert run_push([single(version="1.0.0", force=1)])[0]["kind"] == "push"


def test_in_progress_rule():
    r = run_push([single(version="1.1.0"), single(version="1.2.0"), single(isDiff=3)],
                 in_progress="1.1.0")
    assert [x["kind"] for x in r] == ["ignore"] * 3
    assert "duplicate" in r[0]["reason"]
    assert "busy" in r[1]["reason"] and r[1]["version"] == "1.2.0"


def test_topics_and_builders():
    res = mpy_json(r"""
import json
from firmware import ithings
t = ithings.Topics("26wrGK4KbrW", "D40606B6A9FB")
out = {"subs": list(t.subscriptions()), "client": t.client_id, "up": t.thing_up,
       "report_topic": t.ota_report, "progress": t.progress}
bad = []
for p, d in (("a/b", "d"), ("p", "+"), ("p", "#"), ("", "d"), (None, "d")):
    try:
        ithings.Topics(p, d)
    except ValueError:
        bad.append(1)
out["bad"] = len(bad)
out["name"] = ithings.default_device_name(b"\xd4\x06\x06\xb6\xa9\xfb")
out["info"] = json.loads(ithings.report_info("t1", 1700000000123, "1.0.0", "default",
                                             "D4:06:06:B6:A9:FB", -45, "192.168.1.9"))
out["report"] = json.loads(ithings.report("t2", 5, "1.0.0"))
out["prog"] = json.loads(ithings.progress("t3", 6, 42, "downloading 42%", "default"))
out["fail"] = json.loads(ithings.progress("t3", 7, -2, "md5 mismatch"))
out["redacted"] = json.loads(ithings.progress("t3", 8, -1,
    "GET https://h/x?X-Amz-Signature=abc failed password=hunter2 " + "x" * 80))["params"]["desc"]
errs = 0
for s in (0, 101, -5):
    try:
        ithings.progress("t", 1, s, "x")
    except ValueError:
        errs += 1
out["step_errors"] = errs
toks = set(ithings.new_token() for _ in range(50))
out["tokens"] = [len(toks), len(ithings.new_token())]
print(json.dumps(out))
""")
    assert res["subs"] == ["$ota/down/upgrade/26wrGK4KbrW/D40606B6A9FB",
                           "$thing/down/property/26wrGK4KbrW/D40606B6A9FB"]
    assert res["client"] == "26wrGK4KbrW&D40606B6A9FB"
    assert res["up"] == "$thing/up/property/26wrGK4KbrW/D40606B6A9FB"
    assert res["report_topic"] == "$ota/up/report/26wrGK4KbrW/D40606B6A9FB"
    assert res["progress"] == "$ota/up/progress/26wrGK4KbrW/D40606B6A9FB"
    assert res["bad"] == 5
    assert res["name"] == "D40606B6A9FB"
    assert res["info"] == {"method": "reportInfo", "msgToken": "t1", "timestamp": 1700000000123,
                           "params": {"version": "1.0.0", "module": "default",
                                      "mac": "D4:06:06:B6:A9:FB", "rssi": -45,
                                      "localIp": "192.168.1.9"}}
    assert res["report"]["method"] == "report" and res["report"]["params"]["version"] == "1.0.0"
    assert res["prog"] == {"method": "progress", "msgToken": "t3", "timestamp": 6,
                           "params": {"step": 42, "desc": "downloading 42%", "module": "default"}}
    assert res["fail"]["params"] == {"step": -2, "desc": "md5 mismatch"}
    red = res["redacted"]
    assert "X-Amz" not in red and "abc" not in red and "hunter2" not in red and "://" not in red
    assert len(red) <= 64
    assert res["step_errors"] == 3
    assert res["tokens"] == [50, 16]


def test_compat_registers_ussl():
    res = mpy_json(r"""
import json, sys
from firmware import compat, pem
import ussl
ders = pem.ders("-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n"
                      "junk\n-----BEGIN CERTIFICATE-----\nAwQF\n-----END CERTIFICATE-----\n")
print(json.dumps({"same": ussl is compat, "wrap": hasattr(ussl, "wrap_socket"),
                  "ders": [list(d) for d in ders], "der": list(pem.ders(b"\x30\x82")[0])}))
""")
    assert res["same"] and res["wrap"]
    assert res["ders"] == [[0, 1, 2], [3, 4, 5]]
    assert res["der"] == [0x30, 0x82]
