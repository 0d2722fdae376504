"""`make run`: the firmware on the MicroPython unix port as a simulated ESP-BOX-3, against the
bundled local servers -- the whole life of a device in one command.

    python tools/run_sim.py [--serial SN] [--manual] [--keep] [--no-push] [--exit-when-done]

1. starts the local OTA server (tools/ota_server.py) and the embedded MQTT broker
   (tools/mqtt_broker.py, amqtt), and a stand-in for the iThings platform (tools/push.py) that
   answers the device's version reports;
2. makes a freshly flashed board in build/sim (firmware 1.0.0 in ota_0; with --serial, an efuse
   serial and HMAC key, so activation v2 runs) and boots it; a device reboot boots it again;
3. the device checks in, shows its 6-digit activation code (console and LCD screenshots in
   build/sim/screens), and is activated -- by you typing the code at the server's web page
   (--manual), or automatically a few seconds later;
4. once the device reports its version over MQTT, pushes firmware 1.1.0 like the platform does:
   download -> verify -> write -> reboot -> report -> confirm, with the progress bar here;
5. then pushes 1.2.0 as a delta (isDiff 2): a detools patch from the 1.1.0 image it now runs
   (tools/make_delta.py), a few KiB instead of the whole image, applied the same way.
Then the device keeps running until Ctrl-C (or the script exits, with --exit-when-done).
"""
import argparse
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import build_image  # noqa: E402
import mkflash  # noqa: E402
import ota_server  # noqa: E402
import push  # noqa: E402

REBOOT_EXIT_CODE = 3
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
PRODUCT_ID = "26wrGK4KbrW"
PUSH_VERSION = "1.1.0"
DELTA_VERSION = "1.2.0"


def say(text):
    print("\033[1m== %s\033[0m" % text if sys.stdout.isatty() else "== " + text, flush=True)


def port_or_free(preferred):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def start_broker(port):
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "mqtt_broker.py"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError("MQTT broker did not start: %s" % line.strip())
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc


class Device:
    """The simulated board: runs main.py, and boots it again whenever the device reboots."""

    def __init__(self, root):
        self.root = root
        self.proc = None
        self.boots = 0
        self.stopping = False
        self.exit_code = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _loop(self):
        # the board's order: firmware, frozen modules, /lib (ports/esp32/main.c:144)
        env = dict(os.environ, MICROPYPATH=":".join([ROOT, ".frozen", os.path.join(ROOT, "lib")]))
        while True:
            with self.lock:  # stop() must never miss a process started just after it looked
                if self.stopping:
                    return
                self.boots += 1
                if self.boots > 1:
                    say("device rebooted (boot #%d)" % self.boots)
                self.proc = subprocess.Popen([MICROPYTHON, os.path.join(ROOT, "main.py")], cwd=self.root,
                                             env=env)
            code = self.proc.wait()
            if code != REBOOT_EXIT_CODE:
                self.exit_code = code
                if not self.stopping:
                    say("device stopped (exit code %s)" % code)
                return

    def stop(self):
        with self.lock:
            self.stopping = True
            proc = self.proc
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.thread.join(5)


def device_config(ota_url, broker_port, http_base, shots):
    return {
        "wifi": {"ssid": "SimWiFi", "password": "sim-password"},
        "ota_url": ota_url,
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "product_id": PRODUCT_ID,
                 "http_base": http_base, "download_jitter_ms": 1000},
        "confirm_by": "mqtt",
        "retry": {"base_s": 2, "tries": 5},
        "activation": {"recheck_s": 3, "poll_s": 3},
        "recheck_interval_s": 300,
        "display": {"autoshot": True, "shot_dir": shots},
    }


def demo_push(platform, server, device_name, timeout):
    say("waiting for the device to report its version over MQTT")
    if not platform.wait_report(device_name, "1.0.0", timeout=timeout):
        say("no version report from %s" % device_name)
        return False
    say("pushing firmware %s to %s (served with a pre-signed URL)" % (PUSH_VERSION, device_name))
    image = build_image.build_image(PUSH_VERSION, size=192 * 1024)
    token = platform.push_image(device_name, PUSH_VERSION, image, push.ImageHost(server), form="seed")
    ok = push.follow(platform, device_name, token, timeout) == 0
    say("update %s" % ("confirmed by the device" if ok else "FAILED"))
    return ok and demo_delta_push(platform, server, device_name, image, timeout)


def demo_delta_push(platform, server, device_name, running, timeout):
    import make_delta  # detools
    if not platform.wait_report(device_name, PUSH_VERSION, timeout=timeout):
        say("no version report from %s after the update" % device_name)
        return False
    new = build_image.build_image(DELTA_VERSION, size=192 * 1024)
    patch = make_delta.make_delta(running, new)
    say("pushing firmware %s as a delta (isDiff 2): a %d-byte patch against %s instead of the "
        "%d-byte image" % (DELTA_VERSION, len(patch), PUSH_VERSION, len(new)))
    token = platform.push_image(device_name, DELTA_VERSION, patch, push.ImageHost(server),
                                form="single", is_diff=2, name="app-%s.patch.bin" % DELTA_VERSION)
    ok = push.follow(platform, device_name, token, timeout) == 0
    say("delta update %s" % ("confirmed by the device" if ok else "FAILED"))
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serial", help="efuse serial number: the device uses activation v2")
    ap.add_argument("--manual", action="store_true", help="do not activate automatically")
    ap.add_argument("--keep", action="store_true", help="keep build/sim from the last run")
    ap.add_argument("--no-push", action="store_true", help="do not push an upgrade")
    ap.add_argument("--exit-when-done", action="store_true", help="stop after the demo (CI)")
    ap.add_argument("--root", default=os.path.join(ROOT, "build", "sim"))
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args(argv)

    ota_port, broker_port = port_or_free(8002), port_or_free(1883)
    broker = start_broker(broker_port)
    say("MQTT broker (amqtt) on 127.0.0.1:%d" % broker_port)
    server = ota_server.run_in_thread(
        port=ota_port, auto_activate_s=None if args.manual else 6,
        mqtt={"endpoint": "127.0.0.1:%d" % broker_port, "keepalive": 60},
        log=lambda line: print("server: " + line, flush=True))
    say("OTA server on %s -- type the activation code at %s/" % (server.ota_url, server.url))

    root = os.path.abspath(args.root)
    hmac_key = secrets.token_hex(32) if args.serial else None
    if args.serial:
        server.register_hmac_key(args.serial, bytes.fromhex(hmac_key))
    shots = os.path.join(root, "screens")
    config = device_config(server.ota_url, broker_port, server.url, shots)
    if args.keep and os.path.exists(os.path.join(root, "flash.bin")):
        import json
        with open(os.path.join(root, "config.json"), "w") as f:
            json.dump(config, f, indent=1)
    else:
        mkflash.make_device_root(root, "1.0.0", serial=args.serial, hmac_key=hmac_key, config=config)
    device_name = mkflash.DEFAULT_MAC.replace(":", "")
    platform = push.Platform("127.0.0.1", broker_port, PRODUCT_ID).start()
    say("booting the simulated ESP-BOX-3 in %s" % root)
    device = Device(root).start()
    ok = True
    try:
        if args.no_push:
            ok = bool(platform.wait_report(device_name, timeout=args.timeout)) if args.exit_when_done else True
        else:
            ok = demo_push(platform, server, device_name, args.timeout)
        say("screenshots: %s" % shots)
        if args.exit_when_done:
            return 0 if ok else 1
        say("the device keeps running; Ctrl-C to stop. Push again with: python tools/push.py "
            "--broker 127.0.0.1:%d --product %s --device %s --ota-url %s --version 1.3.0"
            % (broker_port, PRODUCT_ID, device_name, server.url))
        while device.thread.is_alive():
            device.thread.join(1)
        return device.exit_code or 0
    except KeyboardInterrupt:
        return 0
    finally:
        device.stop()
        platform.stop()
        server.stop()
        broker.terminate()


if __name__ == "__main__":
    sys.exit(main())
