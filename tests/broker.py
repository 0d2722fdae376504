"""MQTT brokers for tests: amqtt (tools/mqtt_broker.py, the embedded default) and mosquitto
(when installed; CI apt-installs it), each a subprocess on a free port that can be killed and
restarted on the same port.

    with start("amqtt") as b: ... b.host, b.port, b.kill(), b.restart()
    pytest: the `broker` fixture is parametrized over both (mosquitto skipped when absent).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("amqtt", "mosquitto")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available(kind):
    if kind == "mosquitto":
        return shutil.which("mosquitto") is not None
    return True


class Broker:
    def __init__(self, kind, port=None, tls=None):
        """tls: None, or {"cert": PEM path, "key": PEM path, "port": n} for a TLS listener too."""
        self.kind = kind
        self.host = "127.0.0.1"
        self.port = port or _free_port()
        self.tls = dict(tls) if tls else None
        if self.tls is not None:
            self.tls.setdefault("port", _free_port())
        self.proc = None
        self._dir = tempfile.mkdtemp(prefix="broker-")
        self.log_path = os.path.join(self._dir, "broker.log")

    def _cmd(self):
        if self.kind == "amqtt":
            cmd = [sys.executable, os.path.join(ROOT, "tools", "mqtt_broker.py"),
                   "--host", self.host, "--port", str(self.port)]
            if self.tls:
                cmd += ["--cert", self.tls["cert"], "--key", self.tls["key"],
                        "--tls-port", str(self.tls["port"])]
            return cmd
        conf = os.path.join(self._dir, "mosquitto.conf")
        lines = ["listener %d %s" % (self.port, self.host), "allow_anonymous true",
                 "persistence false", "log_type error", "log_type warning"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # else it drops to "mosquitto", who cannot read our files
        if self.tls:
            lines += ["listener %d %s" % (self.tls["port"], self.host),
                      "certfile %s" % self.tls["cert"], "keyfile %s" % self.tls["key"]]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return ["mosquitto", "-c", conf]

    def start(self, timeout=15):
        if not available(self.kind):
            pytest.skip("%s not installed" % self.kind)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self._cmd(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (self.kind, self.log()))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("%s did not start: %s" % (self.kind, self.log()))

    def kill(self):
        """Kill the broker process (abruptly, like a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self):
        self.kill()
        return self.start()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def start(kind, **kw):
    return Broker(kind, **kw).start()


def make_tls_files(folder, hostnames=("localhost",), ips=("127.0.0.1",)):
    """A throwaway CA and a server certificate for it; paths {"ca", "cert", "key"} (PEM)."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": os.path.join(folder, "ca.pem"), "cert": os.path.join(folder, "server.pem"),
             "key": os.path.join(folder, "server.key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return paths
