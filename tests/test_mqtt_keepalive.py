"""MQTT stays serviced through a download whatever the chunk fill (update/pace.py's tick from the
pipeline to the session), against mosquitto, which drops a client silent for 1.5 keepalives."""
import pytest

import build_image
from image_server import ImageServer
from mqtt_helpers import (DEV, REBOOT, Device, mosquitto, ota, platforms, product,  # noqa: F401
                          push_file)


@pytest.fixture
def drip():
    s = ImageServer()
    yield s
    s.stop()


def test_a_slow_download_keeps_a_1s_keepalive_session_up(mosquitto, ota, product, platforms,
                                                         drip, tmp_path):
    # ~1.3 KiB/s in 256-byte pieces: a 4 KiB chunk takes ~3 s to fill, twice mosquitto's 1.5 s.
    image = build_image.build_image("1.1.0", size=16384)
    drip.files["/app.bin"] = image
    drip.fault = {"pace": (256, 0.2)}
    dev = Device(tmp_path, mosquitto, product, ota, keepalive=1)
    plat = platforms(mosquitto, product)
    proc = dev.boot(40000)
    assert plat.wait_report(DEV, timeout=15)
    token = push_file(plat, DEV, "1.1.0", drip.url("/app.bin", ""), image)
    rc, log = dev.finish(proc)
    assert rc == REBOOT, log
    assert "installed 1.1.0 in ota_1" in log
    assert "connection lost" not in log and log.count("connected; subscribed") == 1, log
    assert len(drip.requests) == 1
    assert plat.wait_step(DEV, [99], token, timeout=5)
