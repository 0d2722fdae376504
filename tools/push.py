#!/usr/bin/env python3
"""Push a firmware upgrade to a device over MQTT, the way the iThings platform does.

    python tools/push.py --broker 127.0.0.1:1883 --product P1 --device D40606B6A9FB \\
        --version 1.1.0 [--image app.bin] [--form single|multi|seed] [--ota-url URL] [--wait-report]
        [--delta-from RUNNING.bin]

The image (built with tools/build_image.py when --image is not given) is served by the local OTA
server -- a running one (--ota-url, via its admin API) or one started here -- under a
pre-signed-style URL: absolute in the "single"/"multi" forms (fileUrl), relative in the seed's
"seed" form (url; the device resolves it against its mqtt.http_base). While it runs the tool
answers every reportInfo with reportInfoReply code 200 (as the platform does), and draws the
device's progress reports as a progress bar. Exit status: 0 when the device confirms the update
(step 100), 1 when it reports a failure (-1..-4), 2 on timeout. With --delta-from, the file
pushed is a patch from that image to the new one (tools/make_delta.py), as `isDiff: 2`.

In-process (tests): ``Platform(host, port, product_id).start()``, then ``push(...)`` /
``push_image(...)``, ``wait_step(...)``, ``progress(device)``, ``reports(device)``; ``stop()``.
"""
import argparse
import hashlib
import json
import os
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request

import paho.mqtt.client as paho

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

FORMS = ("single", "multi", "seed")


def topics(product_id, device):
    pd = "%s/%s" % (product_id, device)
    return {"ota_down": "$ota/down/upgrade/" + pd, "thing_down": "$thing/down/property/" + pd,
            "thing_up": "$thing/up/property/" + pd, "ota_report": "$ota/up/report/" + pd,
            "progress": "$ota/up/progress/" + pd}


def upgrade_message(version, url, size, md5, form="single", token=None, name="app.bin",
                    is_diff=1, sign_method="md5", extra_files=(), module=None, force=None):
    """The push as JSON-able dict: "single" (file fields in data, fileUrl), "multi" (data.files)
    or "seed" (the seed's reportInfoReply with data.files[].url and clientToken)."""
    token = token or secrets.token_hex(8)
    ts = int(time.time() * 1000)
    if form == "seed":
        files = [{"name": name, "signature": md5, "size": size, "url": url}] + list(extra_files)
        data = {"files": files, "id": 1, "isDiff": is_diff, "signMethod": sign_method,
                "version": version}
        msg = {"method": "reportInfoReply", "clientToken": token, "timestamp": ts, "code": 200,
               "status": "成功", "data": data}
    else:
        f = {"size": size, "name": name, "fileUrl": url, "fileMd5": md5, "signature": md5}
        data = {"version": version, "isDiff": is_diff, "signMethod": sign_method, "extra": ""}
        if form == "multi":
            data["files"] = [f] + list(extra_files)
        else:
            data.update(f)
        msg = {"method": "upgrade", "msgToken": token, "timestamp": ts, "code": 200,
               "msg": "success", "data": data}
    if module is not None:
        msg["data"]["module"] = module
    if force is not None:
        msg["data"]["force"] = force
    return msg


class ImageHost:
    """Serves images through the local OTA server: in-process (a ServerThread) or remote (URL)."""

    def __init__(self, server=None, url=None):
        if server is None and url is None:
            import ota_server
            server = ota_server.run_in_thread()
            self.own = server
        else:
            self.own = None
        self.server = server
        self.url = (url or server.url).rstrip("/")

    def add(self, name, data, expires_s=3600):
        """Register `data` as `name`; (relative pre-signed URL, absolute one)."""
        if self.server is not None:
            self.server.register_image(name, data)
            rel = self.server.presign(name, expires_s)
        else:
            req = urllib.request.Request(self.url + "/admin/image?name=" + urllib.parse.quote(name),
                                         data=bytes(data), method="POST")
            urllib.request.urlopen(req, timeout=10).read()
            req = urllib.request.Request(self.url + "/admin/presign",
                                         data=json.dumps({"path": name, "expires": expires_s}).encode(),
                                         headers={"Content-Type": "application/json"})
            rel = json.loads(urllib.request.urlopen(req, timeout=10).read())["url"]
        return rel, self.url + rel

    def stop(self):
        if self.own is not None:
            self.own.stop()


class Platform:
    """The platform side for one product on a broker: records what devices send, answers
    reportInfo, and publishes pushes. The MQTT client is paho's; its network thread connects,
    and reconnects (then re-subscribes, in _on_connect) after a broker restart."""

    def __init__(self, host, port, product_id, username=None, password=None, ssl_context=None,
                 answer_report_info=True, answer_report=True, log=None):
        self.host, self.port = host, port
        self.product_id = product_id
        self.answer_report_info = answer_report_info
        self.answer_report = answer_report
        self.log = log or (lambda line: None)
        self.messages = []        # (time, device, kind, dict) for everything devices sent
        self.cond = threading.Condition()
        self.pushes = []          # (time, device, message dict) we sent
        self.connects = 0         # successful connections (1 + reconnects)
        self.refused = None       # the broker's reason when it refused the connection
        self._subscribed = threading.Event()
        c = self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                      client_id="platform-" + secrets.token_hex(4),
                                      protocol=paho.MQTTv311, clean_session=True)
        if username is not None:
            c.username_pw_set(username, password)
        if ssl_context is not None:
            c.tls_set_context(ssl_context)
        c.reconnect_delay_set(0.2, 2)  # back soon after a broker restart (tests restart them)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = lambda client, userdata, m: self._on_message(m.topic, m.payload)

    def start(self, timeout=10):
        """Connect and subscribe; ConnectionError when the broker is not there in `timeout` s."""
        self.client.connect_async(self.host, self.port, keepalive=20)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.client.loop_stop()
            raise ConnectionError(self.refused or "no connection within %g s" % timeout)
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = "broker refused: %s" % reason_code
            self.log(self.refused)
            return
        self.connects += 1
        if self.connects > 1:
            self.log("reconnected to the broker")
        p = self.product_id  # a clean session forgets subscriptions: subscribe on every connect
        client.subscribe([("$thing/up/property/%s/+" % p, 1), ("$ota/up/progress/%s/+" % p, 1),
                          ("$ota/up/report/%s/+" % p, 1)])

    def publish(self, topic, payload, qos=1, timeout=10):
        """Publish from a test or tool thread: waits for the connection and for the PUBACK."""
        deadline = time.time() + timeout
        while not self.client.is_connected():
            if time.time() > deadline:
                raise ConnectionError("not connected to the broker")
            time.sleep(0.05)
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(max(0.1, deadline - time.time()))
        if qos and not info.is_published():
            raise TimeoutError("no PUBACK for %s" % topic)

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- what devices send ----------------------------------------------------------------------
    def _answers(self, setting, device, msg):
        return setting(device, msg) if callable(setting) else bool(setting)

    def _on_message(self, topic, payload):
        parts = topic.split("/")
        device = parts[-1]
        kind = parts[2] if len(parts) > 2 else "?"  # property | progress | report
        try:
            msg = json.loads(payload)
        except ValueError:
            msg = {"raw": payload.decode("utf-8", "replace")}
        if not isinstance(msg, dict):
            msg = {"raw": msg}
        with self.cond:
            self.messages.append((time.time(), device, kind, msg))
            self.cond.notify_all()
        t = topics(self.product_id, device)
        token = msg.get("msgToken") or msg.get("clientToken")
        # Answers go out from paho's network thread: client.publish queues them, never waits.
        if kind == "property" and msg.get("method") == "reportInfo":
            self.log("%s reports version %s" % (device, (msg.get("params") or {}).get("version")))
            if self._answers(self.answer_report_info, device, msg):
                self.client.publish(t["thing_down"], json.dumps(
                    {"method": "reportInfoReply", "msgToken": token, "code": 200, "msg": "success",
                     "timestamp": int(time.time() * 1000), "data": {}}), qos=1)
        elif kind == "report" and self._answers(self.answer_report, device, msg):
            # The current platform answers this documented topic with an error code.
            self.client.publish(t["ota_down"], json.dumps(
                {"method": "reportReply", "msgToken": token, "code": 400,
                 "msg": "method not supported", "timestamp": int(time.time() * 1000)}), qos=1)

    def progress(self, device, token=None):
        """The device's progress params (each with "token" and "time"), oldest first."""
        out = []
        with self.cond:
            for ts, dev, kind, msg in self.messages:
                if dev == device and kind == "progress" and (token is None or msg.get("msgToken") == token):
                    p = dict(msg.get("params") or {})
                    p["token"] = msg.get("msgToken")
                    p["time"] = ts
                    out.append(p)
        return out

    def reports(self, device):
        """The device's reportInfo params (with "time"), oldest first."""
        with self.cond:
            return [dict(msg.get("params") or {}, time=ts, token=msg.get("msgToken"))
                    for ts, dev, kind, msg in self.messages
                    if dev == device and kind == "property" and msg.get("method") == "reportInfo"]

    def wait(self, predicate, timeout=30):
        """Wait until predicate() is truthy (re-checked on every message); its value or None."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                v = predicate()
                if v:
                    return v
                left = deadline - time.time()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.5))

    def wait_step(self, device, steps, token=None, timeout=30):
        """The first progress params of `device` whose step is in `steps`, or None on timeout."""
        steps = set(steps)

        def find():
            for p in self.progress(device, token):
                if p.get("step") in steps:
                    return p
            return None
        return self.wait(find, timeout)

    def wait_report(self, device, version=None, after=0, timeout=30):
        def find():
            for r in self.reports(device):
                if r["time"] >= after and (version is None or r.get("version") == version):
                    return r
            return None
        return self.wait(find, timeout)

    # ---- pushes ---------------------------------------------------------------------------------
    def publish_raw(self, device, message, topic_kind="ota_down", qos=1):
        """Publish any dict/bytes on one of the device's topics (tests: malformed pushes)."""
        payload = message if isinstance(message, (bytes, str)) else json.dumps(message)
        self.publish(topics(self.product_id, device)[topic_kind], payload, qos=qos)
        self.pushes.append((time.time(), device, message))

    def push(self, device, version, url, size, md5, form="single", **kw):
        """Publish an upgrade push (see upgrade_message); returns its token."""
        msg = upgrade_message(version, url, size, md5, form, **kw)
        self.publish_raw(device, msg)
        token = msg.get("msgToken") or msg.get("clientToken")
        self.log("pushed %s to %s (%s form, token %s)" % (version, device, form, token))
        return token

    def push_image(self, device, version, image, host, form="single", name=None, **kw):
        """Serve `image` (bytes) through `host` (ImageHost) and push it; returns the token."""
        name = name or "fw-%s-%s.bin" % (version, secrets.token_hex(3))
        rel, absolute = host.add(name, image)
        url = rel if form == "seed" else absolute
        return self.push(device, version, url, len(image), hashlib.md5(image).hexdigest(), form,
                         name=name, **kw)


# ---- terminal ------------------------------------------------------------------------------------

def bar(step, width=30):
    if step < 0:
        return "[" + "!" * width + "]"
    n = width * min(step, 100) // 100
    return "[" + "#" * n + "." * (width - n) + "]"


def follow(platform, device, token, timeout, out=sys.stdout):
    """Print the device's progress as a bar until 100 or a failure; exit status 0/1/2."""
    deadline = time.time() + timeout
    seen = 0
    tty = out.isatty()
    while time.time() < deadline:
        got = platform.wait(lambda: len(platform.progress(device, token)) > seen and True,
                            timeout=min(1, deadline - time.time()))
        if not got:
            continue
        items = platform.progress(device, token)
        for p in items[seen:]:
            step, desc = p.get("step"), p.get("desc", "")
            line = "%s %4s%%  %s" % (bar(step), step if step >= 0 else "ERR", desc)
            end = "\n" if (not tty or step < 0 or step >= 99) else ""
            out.write(("\r" if tty else "") + line.ljust(70) + end)
            out.flush()
            if step == 100:
                out.write("device %s confirmed the update\n" % device)
                return 0
            if step < 0:
                out.write("device %s reports failure %d: %s\n" % (device, step, desc))
                return 1
        seen = len(items)
    out.write("\ntimeout: no final report from %s\n" % device)
    return 2


def _broker(text):
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1"), int(port)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT")
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--ca-file", help="CA for a TLS broker (enables TLS)")
    ap.add_argument("--product", required=True, help="productID")
    ap.add_argument("--device", required=True, help="deviceName")
    ap.add_argument("--version", required=True, help="version to push")
    ap.add_argument("--image", help="image file (default: build one for --version)")
    ap.add_argument("--size", type=int, help="size of the built image (default: small)")
    ap.add_argument("--form", choices=FORMS, default="single")
    ap.add_argument("--ota-url", help="running OTA server to serve the image (default: start one)")
    ap.add_argument("--wait-report", action="store_true",
                    help="push only after the device reported its version")
    ap.add_argument("--no-reply", action="store_true", help="do not answer reportInfo")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--delta-from", metavar="RUNNING.bin",
                    help="push a patch from this image (the device's) instead (isDiff 2)")
    args = ap.parse_args(argv)

    if args.image:
        with open(args.image, "rb") as f:
            image = f.read()
    else:
        import build_image
        image = build_image.build_image(args.version, size=args.size)
    diff = {}
    if args.delta_from:
        import make_delta
        with open(args.delta_from, "rb") as f:
            image = make_delta.make_delta(f.read(), image)
        diff = {"is_diff": 2, "name": "app-%s.patch.bin" % args.version}
    host = ImageHost(url=args.ota_url) if args.ota_url else ImageHost()
    ctx = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    bhost, bport = _broker(args.broker)
    platform = Platform(bhost, bport, args.product, args.username, args.password, ctx,
                        answer_report_info=not args.no_reply, log=lambda line: print(line, flush=True))
    try:
        try:
            platform.start()
        except OSError as e:
            print("push: cannot reach the broker at %s:%d: %s" % (bhost, bport, e), file=sys.stderr)
            return 2
        print("%s %s: %d bytes, md5 %s, served by %s" % ("patch" if diff else "image",
              args.version, len(image),
              hashlib.md5(image).hexdigest(), host.url), flush=True)
        if args.wait_report:
            print("waiting for %s to report its version..." % args.device, flush=True)
            if not platform.wait_report(args.device, timeout=args.timeout):
                print("timeout: %s never reported" % args.device)
                return 2
        token = platform.push_image(args.device, args.version, image, host, args.form, **diff)
        return follow(platform, args.device, token, args.timeout)
    except KeyboardInterrupt:
        return 130
    finally:
        platform.stop()
        host.stop()


if __name__ == "__main__":
    sys.exit(main())
