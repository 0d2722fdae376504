#!/usr/bin/env python3
"""Secure Boot V2 checking on the MicroPython unix port: what it adds to an update.

    python tools/bench_signature.py [--no-update]

Signs a 4 MiB image with a throwaway espsecure key (in a temporary folder), then in micropython:

- rsa3072_verify_ms: one firmware/rsa_pss.verify of that signature (median of 21 runs);
- finish_ms: SignatureCheck.finish: sector read-back, layout, CRCs, key digest, RSA-PSS verify;
- update_4MiB_ms: SignatureCheck.update over the whole signed file in 4 KiB chunks (the header
  walk and the SHA-256 of the signed part), beside sha256_4MiB_ms, hashlib.sha256 alone over the
  same chunks, and loop_4MiB_ms, the loop reading the file into the chunk buffer (subtracted
  from both);
- heap_check_bytes: what a SignatureCheck holds (hash object, header scratch) -- the live heap it
  adds for the whole update; heap_finish_alloc_bytes: everything finish() allocates, GC off (an
  upper bound of its transient peak: the bignums, the decoded EM, MGF1), with the sector read
  into the caller's 4 KiB buffer as the updater will; heap_finish_peak_bytes: the smallest free
  heap finish() succeeds in (ballast fills the rest; binary search in 64-byte steps): its real
  transient peak.
- added_vs_update: (update + finish) / the time tools/bench.py's engine takes for a 4 MiB update
  (median of 3 rounds of its "rate" run; skipped with --no-update). Goal: <= 0.05.

Prints one JSON object. `make bench` has the figures that count, through the real updater:
section() below, bench.json "signature".
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import app_heap  # noqa: E402
import build_image  # noqa: E402

MICROPYTHON = os.environ.get("MICROPYTHON") or os.path.join(os.path.dirname(sys.executable), "micropython")
SIZE = 4 * 1024 * 1024

DEVICE = r"""
import gc, json, time, binascii
from firmware import secure_boot, rsa_pss
a = json.loads(ARGS)
trusted = [binascii.unhexlify(a["digest"])]
buf = bytearray(4096)

def feed(sink):
    t = time.ticks_us()
    with open(a["path"], "rb") as f:
        while f.readinto(buf) == 4096:
            if sink is not None:
                sink(buf)
    return time.ticks_diff(time.ticks_us(), t) / 1000

out = {}
loop = min(feed(None) for _ in range(3))
out["loop_4MiB_ms"] = round(loop, 1)
import hashlib
out["sha256_4MiB_ms"] = round(min(feed(hashlib.sha256().update) for _ in range(3)) - loop, 1)
gc.collect()
m0 = gc.mem_alloc()
chk = secure_boot.SignatureCheck(trusted)
gc.collect()
out["heap_check_bytes"] = gc.mem_alloc() - m0
out["update_4MiB_ms"] = round(feed(chk.update) - loop, 1)
f = open(a["path"], "rb")
def read(off, view):
    f.seek(off)
    f.readinto(view)
gc.collect()
gc.disable()
m0 = gc.mem_alloc()
t = time.ticks_us()
ok = chk.finish(read, buf)
out["finish_ms"] = round(time.ticks_diff(time.ticks_us(), t) / 1000, 2)
out["heap_finish_alloc_bytes"] = gc.mem_alloc() - m0
gc.enable()
assert ok and chk.block == 0
blk = memoryview(buf)
read(chk.signed, blk)
f.close()
sig, n, d = blk[812:1196], blk[36:420], bytes(blk[4:36])
times = []
for _ in range(21):
    t = time.ticks_us()
    assert rsa_pss.verify(d, sig, n, 65537, 3072)
    times.append(time.ticks_diff(time.ticks_us(), t) / 1000)
out["rsa3072_verify_ms"] = round(sorted(times)[10], 2)
print(json.dumps(out))
"""

# How much free heap finish() needs: everything up to it as above, then ballast leaves exactly
# FREE bytes free (after a collection) and finish() must succeed in them.
FIT = r"""
import gc, json, binascii
from firmware import secure_boot
a = json.loads(ARGS)
buf = bytearray(4096)
chk = secure_boot.SignatureCheck([binascii.unhexlify(a["digest"])])
f = open(a["path"], "rb")
while f.readinto(buf):
    chk.update(buf)
def read(off, view):
    f.seek(off)
    f.readinto(view)
ballast = []
gc.collect()
while gc.mem_free() > FREE + 1024:
    ballast.append(bytearray(512))
while gc.mem_free() > FREE + 32:
    ballast.append(bytearray(16))
gc.collect()
print(json.dumps({"ok": chk.finish(read, buf), "free": gc.mem_free()}))
"""


def espsecure(*args):
    subprocess.run([sys.executable, "-m", "espsecure"] + [str(a) for a in args], check=True,
                   capture_output=True)


def finish_peak(args):
    """Smallest free heap (bytes, 64-byte steps) in which finish() succeeds."""
    def fits(free):
        p = subprocess.run([MICROPYTHON, "-c", "ARGS = %r\nFREE = %d\n" % (json.dumps(args), free) + FIT],
                           env=dict(os.environ, MICROPYPATH=ROOT), capture_output=True, text=True,
                           timeout=120)
        return p.returncode == 0 and '"ok": true' in p.stdout
    steps = app_heap.smallest(lambda k: fits(k * 64), 0, 1024)  # 64-byte steps up to 64 KiB
    return None if steps is None else steps * 64


def update_seconds():
    import bench
    work = tempfile.mkdtemp(prefix="bench-sig-")
    r = bench.Bench(work).run("rate", "4MiB", rounds=3)
    return statistics.median(r["update_s"])


def section(bench, out):
    """bench.json's "signature" section (`make bench`). `bench`: the tools/bench.py Bench (its
    server, device root and 4 MiB image); `out`: its figures so far -- update_s and firmware_s
    (64 KiB chunks), modeled_flash_s, heap_peak_bytes and heap_peak_by_phase_bytes, all with
    signatures off.

    - rsa3072_verify_ms, finish_ms, sha256_update_4MiB_ms: DEVICE above, on the unix port;
    - added_s = SignatureCheck.update over the 4 MiB file + finish(); added_vs_sim_update: over
      the whole simulated 4 MiB update (update_s); added_vs_board_model: over a modeled board
      update, firmware_s (the engine's own time as measured here) + modeled_flash_s "4MiB
      (64KiB)" engine (its flash operations at NOR datasheet timings, see tools/bench.py);
    - end_to_end_4MiB_s: the update through the real updater, signed image and a config trusting
      its key vs unsigned and off (median of 7 alternating rounds; one is ~0.07 s, so fewer
      rounds leave the difference to scheduling noise); end_to_end_added_vs_sim_update
      is their difference over "off" (the required signature replaces ImageCheck's SHA-256);
    - heap: the live heap sampled at every flash operation as heap_peak_bytes is (4 KiB chunks),
      signed and on; no flash operation happens during the RSA verify, so its transient is added
      on top of the heap sampled at verify time: finish_transient_bytes, the smallest free heap
      finish() succeeds in (FIT). heap_peak_on_bytes = max(sampled, verify + transient);
      heap_on_minus_off_bytes against heap_peak_bytes 4MiB. (Not the min_free_heap search: on
      the sim it hinges on set_boot's 4 KiB verify buffer -- ESP-IDF C on a board -- finding one
      contiguous hole, which moves by several KiB with any change of heap layout.)
    A config trusting another key must make the same run fail: the check really ran."""
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "k.pem")
        espsecure("generate-signing-key", "--version", "2", "--scheme", "rsa3072", key)
        dig = os.path.join(tmp, "d.bin")
        espsecure("digest-sbv2-public-key", "--keyfile", key, "--output", dig)
        with open(dig, "rb") as f:
            digest = f.read().hex()
        signed = {}
        for name, image in (("4MiB", bench.images["4MiB"]),
                            ("64KiB", build_image.build_image("1.1.0", size=65536, seed=6))):
            src, dst = os.path.join(tmp, name + ".bin"), os.path.join(tmp, name + "-signed.bin")
            with open(src, "wb") as f:
                f.write(image)
            espsecure("sign-data", "--version", "2", "--keyfile", key, "--output", dst, src)
            signed[name] = dst
        args = {"path": signed["4MiB"], "digest": digest}
        p = subprocess.run([MICROPYTHON, "-c", "ARGS = %r\n" % json.dumps(args) + DEVICE],
                           env=dict(os.environ, MICROPYPATH=ROOT), capture_output=True,
                           text=True, timeout=600, check=True)
        micro = json.loads(p.stdout.strip().splitlines()[-1])
        transient = finish_peak(dict(args, path=signed["64KiB"]))
        with open(signed["4MiB"], "rb") as f:
            data = f.read()
    bench.images["4MiB-signed"] = data
    # the handler class of the running server (bench.py runs as __main__: not bench._Handler)
    bench.server.RequestHandlerClass.files["/4MiB-signed.bin"] = data
    on = {"update": {"require_signature": True, "trusted_keys": [digest]}}
    wrong = {"update": {"require_signature": True, "trusted_keys": ["00" * 32]}}
    t_on, t_off = [], []
    for _ in range(7):
        t_off.append(bench.run("time", "4MiB", chunk=65536)["update_s"])
        t_on.append(bench.run("time", "4MiB-signed", chunk=65536, config=on)["update_s"])
    # the same download with another key trusted must fail (it was served just above)
    if bench.run("time", "4MiB-signed", chunk=65536, config=wrong, check=False) is not None:
        raise RuntimeError("an image signed by an untrusted key installed: the check did not run")
    h = bench.run("heap", "4MiB-signed", chunk=4096, stage=False, config=on)["heap_peak"]
    peak_on = max(max(h.values()), h["verify"] + transient)
    peak_off = out["heap_peak_bytes"]["4MiB"]
    added = (micro["update_4MiB_ms"] + micro["finish_ms"]) / 1000
    board = out["firmware_s"] + out["modeled_flash_s"]["4MiB (64KiB)"]["engine"]
    return {
        "rsa3072_verify_ms": micro["rsa3072_verify_ms"], "finish_ms": micro["finish_ms"],
        "sha256_update_4MiB_ms": micro["update_4MiB_ms"], "added_s": round(added, 4),
        "sim_update_s": out["update_s"], "added_vs_sim_update": round(added / out["update_s"], 4),
        "board_model_update_s": round(board, 3), "added_vs_board_model": round(added / board, 4),
        "end_to_end_4MiB_s": {"on": round(statistics.median(t_on), 4),
                              "off": round(statistics.median(t_off), 4)},
        # Net: with a signature required the stream skips ImageCheck's own SHA-256 pass, so an
        # update pays less than the check's time on its own (added_s).
        "end_to_end_added_vs_sim_update": round(
            (statistics.median(t_on) - statistics.median(t_off)) / statistics.median(t_off), 4),
        "heap_peak_sampled_on_bytes": h, "heap_peak_sampled_off_bytes":
            out.get("heap_peak_by_phase_bytes", {}).get("4MiB"),
        "finish_transient_bytes": transient, "heap_check_bytes": micro["heap_check_bytes"],
        "heap_peak_on_bytes": peak_on, "heap_peak_off_bytes": peak_off,
        "heap_on_minus_off_bytes": peak_on - peak_off,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "k.pem")
        espsecure("generate-signing-key", "--version", "2", "--scheme", "rsa3072", key)
        dig = os.path.join(tmp, "d.bin")
        espsecure("digest-sbv2-public-key", "--keyfile", key, "--output", dig)
        image = build_image.build_image("1.1.0", size=SIZE - 4096 - 48, seed=5)
        src = os.path.join(tmp, "app.bin")
        with open(src, "wb") as f:
            f.write(image)
        signed = os.path.join(tmp, "app-signed.bin")
        espsecure("sign-data", "--version", "2", "--keyfile", key, "--output", signed, src)
        with open(dig, "rb") as f:
            args = {"path": signed, "digest": f.read().hex()}
        env = dict(os.environ, MICROPYPATH=ROOT)
        p = subprocess.run([MICROPYTHON, "-c", "ARGS = %r\n" % json.dumps(args) + DEVICE],
                           env=env, capture_output=True, text=True, timeout=600)
        if p.returncode:
            print(p.stdout, p.stderr, file=sys.stderr)
            return 1
        out = json.loads(p.stdout.strip().splitlines()[-1])
        out["signed_file_bytes"] = os.path.getsize(signed)
        small = os.path.join(tmp, "small.bin")
        with open(src, "wb") as f:
            f.write(build_image.build_image("1.1.0", size=65536, seed=6))
        espsecure("sign-data", "--version", "2", "--keyfile", key, "--output", small, src)
        out["heap_finish_peak_bytes"] = finish_peak(dict(args, path=small))
    if "--no-update" not in argv:
        upd = update_seconds()
        out["update_4MiB_s"] = round(upd, 3)
        out["added_vs_update"] = round((out["update_4MiB_ms"] + out["finish_ms"]) / 1000 / upd, 4)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
