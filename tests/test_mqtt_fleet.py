"""A fleet on one broker: 20 simulated devices (20 device roots, 20 micropython processes) get
one upgrade push at the same moment. All must update and confirm, and their download start
times -- taken from the OTA server's request log, not from the devices -- must be spread by the
configured jitter (mqtt.download_jitter_ms) instead of arriving as one thundering herd.

Run with -s to see the figures (start-time spread, min/max after the push).
"""
import hashlib
import json
import os
import time

import build_image
import push
from mqtt_helpers import REBOOT, Device, amqtt, ota, platforms, product  # noqa: F401

N = 20
JITTER_MS = 3000


def test_fleet_push_is_jittered(amqtt, ota, product, platforms, tmp_path):
    devs = [Device(tmp_path / ("d%02d" % i), amqtt, product, ota, download_jitter_ms=JITTER_MS,
                   mac="D4:06:06:00:10:%02X" % i) for i in range(N)]
    plat = platforms(amqtt, product)
    image = build_image.build_image("1.1.0", size=65536)
    host = push.ImageHost(server=ota)
    procs = [d.boot(40000) for d in devs]
    assert plat.wait(lambda: all(plat.reports(d.name) for d in devs), timeout=30), \
        [d.name for d in devs if not plat.reports(d.name)]
    rel, absolute = host.add("fleet-%s.bin" % product, image)
    md5 = hashlib.md5(image).hexdigest()
    t_push = time.time()
    tokens = {d.name: plat.push(d.name, "1.1.0", absolute, len(image), md5, name="app.bin")
              for d in devs}
    t_pushed = time.time()
    results = [d.finish(p, timeout=60) for d, p in zip(devs, procs)]
    for (rc, log), d in zip(results, devs):
        assert rc == REBOOT, (d.name, log)
    # Second boot of every device: the new image reports, is answered, confirms itself.
    procs = [d.boot(6000) for d in devs]
    assert plat.wait(lambda: all(100 in [p["step"] for p in plat.progress(d.name, tokens[d.name])]
                                 for d in devs), timeout=40)
    for d, p in zip(devs, procs):
        d.finish(p, timeout=30)

    starts = sorted(r["time"] - t_push for r in ota.requests
                    if r["endpoint"] == "firmware" and r["time"] >= t_push)
    assert len(starts) == N, starts
    chosen = []
    for rc, log in results:
        for line in log.splitlines():
            if "download starts in" in line:
                chosen.append(int(line.split("download starts in")[1].split()[0]))
    spread = starts[-1] - starts[0]
    figures = {"devices": N, "jitter_ms": JITTER_MS, "push_publish_s": round(t_pushed - t_push, 3),
               "first_start_s": round(starts[0], 3), "last_start_s": round(starts[-1], 3),
               "spread_s": round(spread, 3),
               "max_starts_in_any_250ms": max(sum(1 for t in starts if s <= t < s + 0.25)
                                              for s in starts),
               "device_delays_ms": {"min": min(chosen), "max": max(chosen),
                                    "mean": sum(chosen) // len(chosen)}}
    print("\nfleet figures: " + json.dumps(figures))
    out = os.environ.get("FLEET_FIGURES")
    if out:
        with open(out, "w") as f:
            json.dump(figures, f, indent=1)
    assert len(chosen) == N and all(0 <= c <= JITTER_MS for c in chosen)
    # 20 uniform delays over 3 s: a spread under 40% of the window (1.2 s) has odds below 1e-5.
    assert spread >= 0.4 * JITTER_MS / 1000, figures
    # No herd: far fewer than all devices start within any quarter second.
    assert figures["max_starts_in_any_250ms"] <= N // 2, figures
    assert starts[-1] <= JITTER_MS / 1000 + 5, figures
