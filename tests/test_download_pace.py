"""A download that crawls or can never work ends promptly (firmware/update/pace.py and the
pipeline): below the minimum rate it is retried once and then fails -1 "download too slow";
a permanent HttpError (credentials in the URL, too many redirects) is not retried at all; the
pipeline's tick runs after every read, however little a read brings."""
import json
import time

import pytest

from conftest import mpy_json, run_mpy
from http_fault_server import Reply, redirect, start
from test_updater import (DRIVER, SIZE, _failed, assert_old_boots, image, install,  # noqa: F401
                          offer_for, root, server)


def test_a_body_below_the_minimum_rate_is_retried_once_then_fails_too_slow(root, server):
    data = image()
    server.fault = {"pace": (100, 0.5)}        # 200 B/s against a 1 KiB/s floor
    t = time.time()
    r = install(root, offer_for(server, data), min_rate=[1024, 1500])
    took = time.time() - t
    _failed(r, -1, "download too slow")
    assert len(server.requests) == 2           # the first request and one retry
    assert took < 15, took
    assert_old_boots(root)


def test_a_firmware_body_at_1_byte_per_second_ends_on_time_and_says_so(root, server):
    """The slow-loris case: 1 byte/s never trips a socket timeout; the rate floor ends it."""
    server.fault = {"pace": (1, 1.0)}
    t = time.time()
    r, out = _run(root, offer_for(server, image()), min_rate=[1024, 2000])
    took = time.time() - t
    _failed(r, -1, "download too slow")
    assert took < 12, took                     # two 2 s windows, not SIZE seconds
    assert "download too slow" in out and "retrying" in out, out
    assert_old_boots(root)


def test_a_slow_body_above_the_floor_completes(root, server):
    data = image(size=40000)
    server.fault = {"pace": (2000, 0.1)}       # ~20 KB/s against a 1 KiB/s floor
    r = install(root, offer_for(server, data), min_rate=[1024, 1000])
    assert r["ok"], r
    assert len(server.requests) == 1


def _run(root, offer, **args):
    args["offer"] = offer
    proc = run_mpy(DRIVER, cwd=root, env={"UPD_ARGS": json.dumps(args)})
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_credentials_in_the_url_fail_at_once(root, server):
    o = offer_for(server, image())
    o["url"] = o["url"].replace("http://", "http://user:pw@")
    r, out = _run(root, o)
    _failed(r, -1, "credentials in URL not supported")
    assert "retrying" not in out and not server.requests
    assert_old_boots(root)


@pytest.fixture
def looping():
    seen = []

    def handler(req):
        seen.append(req.target)
        return redirect("/loop/%d" % len(seen))
    port, stop = start(handler)
    yield port, seen
    stop()


def test_too_many_redirects_fail_at_once(root, looping):
    port, seen = looping
    o = {"url": "http://127.0.0.1:%d/loop/0" % port, "size": SIZE, "version": "1.1.0"}
    r, out = _run(root, o)
    _failed(r, -1, "too many redirects")
    assert len(seen) == 6 and "retrying" not in out   # one request and its 5 redirects, once


TICKS = """
import json, time
from firmware.update import pace
from firmware import watchdog
calls = []
class W:
    fed = 0
    def feed(self):
        W.fed += 1
watchdog._wdt = W()
t = pace.Ticker(lambda: calls.append(time.ticks_ms()), every_ms=100)
t0 = time.ticks_ms()
for _ in range(50):          # reads 20 ms apart: the hook runs every ~100 ms, the feed every read
    time.sleep_ms(20)
    t()
t.sleep_ms(450)              # a retry backoff keeps both going
print(json.dumps([W.fed, len(calls), time.ticks_diff(time.ticks_ms(), t0)]))
"""


def test_the_ticker_feeds_every_read_and_runs_the_hook_at_its_rate():
    fed, hooks, ms = mpy_json(TICKS)
    assert fed >= 52                           # 50 reads + the backoff's slices
    assert 9 <= hooks <= ms // 100 + 1, (hooks, ms)


def test_min_rate_config():
    out = mpy_json("""
import json
from firmware.update import pace
print(json.dumps([pace.min_rate({}), pace.min_rate({"update": {"min_rate_bps": 0}}),
                  pace.min_rate({"update": {"min_rate_bps": 2048, "min_rate_window_s": 10}}),
                  pace.min_rate({"update": {"min_rate_bps": "x", "min_rate_window_s": -1}})]))
""")
    assert out == [[1024, 30000], None, [2048, 10000], [1024, 30000]]
