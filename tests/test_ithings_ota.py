"""The iThings platform logic (firmware/ithings_ota.py) and the MQTT session's own rules
(firmware/mqtt_session.py) without a socket, under the real micropython binary: a recording
session stands in for the broker connection. Against real brokers: test_mqtt_ota.py and
test_mqtt_resilience.py."""
import json

from conftest import mpy_json

PRELUDE = r"""
import json, time
from firmware import ithings, ithings_ota, config as C
from firmware.mqtt_ota import Settings

class Store:
    def __init__(self, data=None):
        self.data = data or {}
    def get(self, k, d=None):
        return self.data.get(k, d)
    def set(self, k, v):
        self.data[k] = v
        return True
    def delete(self, k):
        return self.data.pop(k, None) is not None

class Part:
    RUNNING = 1
    valid = []
    def __init__(self, *a):
        pass
    def get_next_update(self):
        return self
    def info(self):
        return (0, 0x11, 0x310000, 0x300000, "ota_1", False)
    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        cls.valid.append(1)

class Board:
    type = "esp-box-3"
    Partition = Part
    def __init__(self, data=None):
        self.settings = Store(data)
    def mac(self):
        return b"\xd4\x06\x06\xb6\xa9\xfb"
    def wifi(self):
        return {"rssi": -40, "ip": "10.0.0.2"}
    def time_ms(self):
        return 1700000000000

class Session:
    # The session's face: publish (QoS 0/1, now or never), send (QoS 1, queued), connected.
    def __init__(self):
        self.connected = True
        self.out = []
    def publish(self, topic, payload, qos):
        if not self.connected:
            return False
        self.out.append([topic, json.loads(payload), qos, "publish"])
        return True
    def send(self, topic, payload, on_sent=None):
        self.out.append([topic, json.loads(payload), 1, "send"])
        if on_sent:
            on_sent()

class Ctx:
    pass

def agent(running="1.0.0", settings=None, **mqtt):
    m = {"host": "h", "product_id": "P", "download_jitter_ms": 0}
    m.update(mqtt)
    ctx = Ctx()
    ctx.board = Board(settings)
    ctx.config = C._merge(C.DEFAULTS, {"mqtt": m, "confirm_by": mqtt.pop("confirm_by", "mqtt")})
    ctx.running_version = running
    ctx.display = None
    cfg = Settings(ctx.config, None, ctx.board.mac())
    s = Session()
    return ithings_ota.Agent(ctx, cfg, s), s, ctx

DOWN = "$ota/down/upgrade/P/D40606B6A9FB"
THING = "$thing/down/property/P/D40606B6A9FB"
def push(version="1.1.0", token="t1", **data):
    d = {"version": version, "fileUrl": "http://h/fw.bin?X-Sig=1", "size": 1000,
         "fileMd5": "ab" * 16, "name": "fw.bin"}
    d.update(data)
    return json.dumps({"method": "upgrade", "msgToken": token, "code": 200, "data": d}).encode()
def brief(out):
    return [[t.rsplit("/", 2)[0], m["method"], (m.get("params") or {}).get("step"), q, how]
            for t, m, q, how in out]
"""


def run(code):
    return mpy_json(PRELUDE + code)


def test_version_report_admission_and_refusals():
    got = run(r"""
a, s, ctx = agent()
a.report_version()
a.handle(DOWN, push())
p = a.due_push()
out = [brief(s.out), [p.version, p.url, p.size], a.due_push()]
s.out = []
a.handle(DOWN, push(token="t1"))                     # a redelivery of a handled push
a.handle(DOWN, push(version="1.0.0", token="t2"))   # the running version: re-report instead
a.handle(DOWN, push(token="t3", isDiff=3))           # refused: reported with its code
a.handle("$ota/down/upgrade/P/OTHER", push(token="t4"))
a.handle(DOWN, b"{not json")
out.append(brief(s.out))
out.append(s.out[-1][1]["params"]["desc"])
print(json.dumps(out))
""")
    assert got[0] == [["$thing/up/property", "reportInfo", None, 1, "publish"]]
    assert got[1] == ["1.1.0", "http://h/fw.bin?X-Sig=1", 1000] and got[2] is None
    assert got[3] == [["$thing/up/property", "reportInfo", None, 1, "publish"], ["$ota/up/progress", "progress", -4, 1, "send"]]
    assert got[4] == "isDiff 3 not supported"


def test_busy_and_duplicate_pushes_wait_for_the_first():
    got = run(r"""
a, s, ctx = agent()
a.handle(DOWN, push(token="a"))
a.handle(DOWN, push(token="b"))                  # same version while one waits: duplicate
a.handle(DOWN, push(version="1.2.0", token="c"))  # another version: busy
p = a.due_push()
a.begin(p)
a.handle(DOWN, push(version="1.2.0", token="d"))  # still busy while installing
print(json.dumps([p.token, a.due_push(), brief(s.out), ctx.board.settings.get("mqtt_ota_pending"),
                  [[m["msgToken"], m["params"]["desc"]] for t, m, q, how in s.out]]))
""")
    assert got[0] == "a" and got[1] is None
    # another version while one waits or installs: answered -1 "busy" (QoS 1), not taken
    assert got[2] == [["$ota/up/progress", "progress", -1, 1, "send"],
                      ["$ota/up/progress", "progress", 1, 0, "publish"],
                      ["$ota/up/progress", "progress", -1, 1, "send"]]
    assert got[4] == [["c", "busy updating to 1.1.0"], ["a", "downloading"],
                      ["d", "busy updating to 1.1.0"]]
    assert got[3] == {"pending_version": "1.1.0", "token": "a", "from_version": "1.0.0",
                      "stage": "download"}


def test_download_progress_steps_and_failure_codes():
    got = run(r"""
ithings_ota.PROGRESS_INTERVAL_MS = 0
a, s, ctx = agent()
a.handle(DOWN, push())
p = a.due_push()
a.begin(p)
for done in (0, 5, 10, 10, 500, 995, 1000):
    a.on_download(done, 1000, 100)
steps = [m["params"]["step"] for t, m, q, how in s.out]
s.out = []
a.failed(p, -7, "weird")                          # unknown codes are reported as -1
print(json.dumps([steps, brief(s.out), ctx.board.settings.data]))
""")
    steps, after, data = got
    assert steps == [1, 50, 99]                   # whole-percent changes, never 0 or 100
    assert after == [["$ota/up/progress", "progress", -1, 1, "send"], ["$thing/up/property", "reportInfo", None, 1, "publish"]]
    assert data == {"mqtt_ota_last": {"token": "t1", "version": "1.1.0", "step": -1},
                    "mqtt_ota_seen": ["t1"]}


def test_download_progress_is_at_most_once_a_second():
    got = run(r"""
a, s, ctx = agent()
a.handle(DOWN, push())
a.begin(a.due_push())
for done in range(0, 1001, 10):
    a.on_download(done, 1000, 100)
print(json.dumps(len(s.out)))
""")
    assert got == 1                               # only "downloading" (1): all within a second


def test_confirmation_after_the_reboot_reports_100():
    got = run(r"""
pending = {"mqtt_ota_pending": {"pending_version": "1.1.0", "token": "tok",
                                "from_version": "1.0.0", "stage": "reboot"}}
a, s, ctx = agent("1.1.0", pending)
a.check_pending()
a.report_version()
token = s.out[0][1]["msgToken"]
a.handle(THING, json.dumps({"method": "reportInfoReply", "msgToken": "other", "code": 200}))
before = [list(Part.valid), ctx.board.settings.get("mqtt_ota_pending") is not None]
a.handle(THING, json.dumps({"method": "reportInfoReply", "msgToken": token, "code": 200}))
print(json.dumps([before, list(Part.valid), brief(s.out), s.out[-1][1]["msgToken"],
                  ctx.board.settings.data]))
""")
    before, valid, out, token, data = got
    assert before == [[], True]                   # a reply to someone else's report: nothing
    assert valid == [1]                           # marked valid (confirm_by mqtt)
    assert out[-1] == ["$ota/up/progress", "progress", 100, 1, "send"] and token == "tok"
    assert data == {"mqtt_ota_last": {"token": "tok", "version": "1.1.0", "step": 100}}


def test_interrupted_and_rolled_back_updates_are_reported():
    got = run(r"""
out = []
for stage, ran in (("download", False), ("reboot", False), ("reboot", True)):
    rec = {"mqtt_ota_pending": {"pending_version": "1.1.0", "token": "t-" + stage,
                                "from_version": "1.0.0", "stage": stage, "ran": ran}}
    a, s, ctx = agent("1.0.0", rec)
    a.check_pending()
    out.append([s.out[0][1]["params"], "mqtt_ota_pending" in ctx.board.settings.data])
print(json.dumps(out))
""")
    assert got[0] == [{"step": -1, "desc": "interrupted by a reset", "module": "default"}, False]
    assert got[1] == [{"step": -3, "desc": "rolled back to 1.0.0: 1.1.0 never ran (cut at first "
                                           "boot)", "module": "default"}, False]
    # it ran (check_pending on the new image marked it): the rollback was its own doing
    assert got[2] == [{"step": -3, "desc": "rolled back to 1.0.0", "module": "default"}, False]


def test_session_backoff_and_queue_without_a_broker():
    got = run(r"""
from firmware import mqtt_session
lo = [mqtt_session.backoff_ms(n, 8000, lambda k: 0) for n in range(1, 7)]
hi = [mqtt_session.backoff_ms(n, 8000, lambda k: k - 1) for n in range(1, 7)]
a, s, ctx = agent()
sess = mqtt_session.Session(a.cfg, a.t.subscriptions())
sent = []
for i in range(mqtt_session.QUEUE_MAX + 2):      # no connection: they wait, oldest dropped
    sess.send("t", b"%d" % i, lambda i=i: sent.append(i))
class Client:                                     # umqtt.simple's publish, recorded
    def __init__(self):
        self.got = []
    def publish(self, topic, payload, qos):
        self.got.append([topic.decode(), payload.decode(), qos])
c = Client()
sess.client = c
sess._flush_queue()
print(json.dumps([lo, hi, c.got[0], len(c.got), sent[:2], sess.queue]))
""")
    lo, hi, first, n, sent, queue = got
    assert lo == [500, 1000, 2000, 4000, 4000, 4000]   # half the doubling delay, capped ...
    assert hi == [1000, 2000, 4000, 8000, 8000, 8000]  # ... up to the full delay
    assert first == ["t", "2", 1] and n == 8 and sent == [2, 3] and queue == []
