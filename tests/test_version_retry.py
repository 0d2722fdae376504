"""firmware/version.py and firmware/retry.py on the MicroPython unix port."""
import json

from conftest import mpy_json

VERSIONS = """
import json
from firmware import version as v
out = {}
for a, b in json.loads(%r):
    try:
        out[a + " " + b] = v.compare(a, b)
    except ValueError as e:
        out[a + " " + b] = "ValueError"
print(json.dumps(out))
"""

PAIRS = [
    ("1.0.1", "1.0.0", 1), ("1.0.0", "1.0.1", -1), ("1.0", "1.0.0", 0), ("1", "1.0.0.0", 0),
    ("1.10", "1.9", 1), ("2", "1.99.99", 1), ("v1.2.3", "1.2.3", 0), ("V1.3", "1.2.9", 1),
    ("1.0.0-dirty", "1.0.0", 0), ("1.29.0-preview.12.gabc", "1.28.9", 1), ("1.2+build7", "1.2", 0),
    (" 1.2 ", "1.2", 0), ("01.02", "1.2", 0),
    ("", "1.0", "ValueError"), ("1..2", "1.0", "ValueError"), ("1.x", "1.0", "ValueError"),
    ("1.0", "abc", "ValueError"), ("-1", "1.0", "ValueError"), ("1.2.", "1.0", "ValueError"),
    ("v", "1.0", "ValueError"), ("1.2.3.4.5.6.7.8.9", "1", "ValueError"),
    ("1234567890", "1", "ValueError"),
]


def test_version_compare():
    out = mpy_json(VERSIONS % json.dumps([p[:2] for p in PAIRS]))
    for a, b, want in PAIRS:
        assert out[a + " " + b] == want, (a, b)


def test_non_string_versions_are_value_errors():
    out = mpy_json("""
import json
from firmware import version as v
res = []
for x in (None, 2, 1.5, ["1"]):
    try:
        v.parse(x); res.append("parsed")
    except ValueError:
        res.append("ValueError")
print(json.dumps(res + [v.is_valid("1.2"), v.is_valid(None), v.is_newer("1.2.1", "1.2")]))
""")
    assert out == ["ValueError"] * 4 + [True, False, True]


def test_backoff_doubles_is_capped_jittered_and_bounded():
    out = mpy_json("""
import json
from firmware import retry
b = retry.Backoff(base_s=10, factor=2, max_s=100, tries=10, jitter=0)
plain = []
while True:
    d = b.fail()
    if d is None:
        break
    plain.append(d)
j = retry.Backoff(base_s=10, factor=2, max_s=1800, tries=10, jitter=0.25)
spread = [j.delay_s(1) for _ in range(300)]
cfg = retry.Backoff.from_config({"retry": {"base_s": 0.5, "tries": 4, "jitter": True}})
print(json.dumps([plain, b.failures, b.exhausted(), min(spread), max(spread),
                  len(set(spread)), cfg.base_s, cfg.tries, cfg.jitter, cfg.factor]))
""")
    plain, failures, exhausted, lo, hi, distinct, base, tries, jitter, factor = out
    assert plain == [10, 20, 40, 80, 100, 100, 100, 100, 100]   # 10 tries: 9 waits, capped
    assert failures == 10 and exhausted
    assert 7.5 <= lo < 8.5 and 11.5 < hi <= 12.5 and distinct > 50  # +/-25 %, really random
    assert (base, tries, jitter, factor) == (0.5, 4, 0.25, 2)      # bad types keep defaults


def test_call_retries_then_raises_exhausted_with_the_reason():
    out = mpy_json("""
import json
from firmware import retry
slept = []
shown = []
class D:
    def show_failure(self, reason, nxt): shown.append([reason, nxt])
class E(Exception):
    def __init__(self, reason): self.reason = reason
n = [0]
def flaky():
    n[0] += 1
    if n[0] < 3:
        raise E("HTTP 500: boom")
    return "ok"
b = retry.Backoff(base_s=1, factor=2, max_s=60, tries=5, jitter=0)
r1 = retry.call(flaky, "OTA check", b, E, D(), sleep=slept.append)
def never():
    raise E("connect failed")
try:
    retry.call(never, "OTA check", b, E, D(), sleep=slept.append)
    r2 = "returned"
except retry.Exhausted as e:
    r2 = [e.reason, e.tries, str(e)]
print(json.dumps([r1, r2, slept, shown[0]]))
""")
    r1, r2, slept, first_shown = out
    assert r1 == "ok"
    assert r2 == ["connect failed", 5, "OTA check failed 5 times: connect failed"]
    assert slept == [1, 2, 1, 2, 4, 8]          # backoff restarts for each call
    assert first_shown == ["HTTP 500: boom", "retry 2/5 in 1.0 s"]


def test_same_version_normalises_versions_and_compares_other_text_exactly():
    out = mpy_json("""
import json
from firmware import version as v
print(json.dumps([v.same("v1.1", "1.1.0"), v.same("1.1.0", "1.1.1"), v.same("nightly", "nightly"),
                  v.same("nightly", "Nightly"), v.same("1.0", None)]))
""")
    assert out == [True, False, True, False, False]
