"""Secure Boot V2 signature checks (firmware/secure_boot.py, rsa_pss.py) and anti-rollback
(anti_rollback.py), run on the real MicroPython unix port against images signed by the real
espsecure (esptool). No signature in these tests is made by our code."""
import json
import os
import struct
import subprocess
import sys
import zlib

import pytest

from conftest import ROOT, mpy_json, run_mpy
from test_app_image import FAKE
import bench_signature
import build_image

SECTOR = 4096
BLOCK = 1216
SIGN_TOOL = os.path.join(ROOT, "tools", "sign_image.py")

# Verifies files as the update stage will: every byte through SignatureCheck.update in
# `chunk`-sized pieces, then finish() reading the sector back (here from the file, which stands
# for the partition). One micropython process for a whole list of jobs.
DRIVER = r'''
import binascii, json
from firmware import secure_boot

def run(job):
    trusted = [binascii.unhexlify(d) for d in job["trusted"]]
    chk = secure_boot.SignatureCheck(trusted, job.get("required", True))
    buf = bytearray(job.get("chunk", 4096))
    mv = memoryview(buf)
    with open(job["path"], "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            chk.update(buf if n == len(buf) else mv[:n])

        def read(off, view):
            f.seek(off)
            assert f.readinto(view) == len(view)
        try:
            ok = chk.finish(read, buf)
        except secure_boot.SignatureError as e:
            return {"ok": False, "reason": e.reason, "detail": e.detail}
    return {"ok": ok, "block": chk.block, "key": chk.key}

with open(JOBS) as f:
    print(json.dumps([run(j) for j in json.load(f)]))
'''


def espsecure(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "espsecure"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError("espsecure %s failed:\n%s%s" % (args[0], proc.stdout, proc.stderr))
    return proc


class Key:
    def __init__(self, folder, name):
        self.pem = folder / (name + ".pem")
        self.pub = folder / (name + ".pub.pem")
        espsecure("generate-signing-key", "--version", "2", "--scheme", "rsa3072", self.pem)
        espsecure("extract-public-key", "--version", "2", "--keyfile", self.pem, self.pub)
        out = folder / (name + ".digest")
        espsecure("digest-sbv2-public-key", "--keyfile", self.pub, "--output", out)
        self.digest = out.read_bytes().hex()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {name: Key(folder, name) for name in "AB"}


def sign(src, dst, *keys, append=False):
    args = ["sign-data", "--version", "2"]
    for k in keys:
        args += ["--keyfile", k.pem]
    espsecure(*(args + (["--append-signatures"] if append else []) + ["--output", dst, src]))
    return dst


def verify_on_device(tmp_path, jobs):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(jobs))
    return mpy_json("JOBS = %r\n" % str(path) + DRIVER, timeout=300)


def flip(data, off, bit=0x10):
    out = bytearray(data)
    out[off] ^= bit
    return bytes(out)


def fix_crc(data, block):
    """Recompute a block's CRC (zlib, as espsecure writes it) after tampering with it."""
    out = bytearray(data)
    o = len(out) - SECTOR + block * BLOCK
    out[o + 1196:o + 1200] = struct.pack("<I", zlib.crc32(bytes(out[o:o + 1196])))
    return bytes(out)


def sig_at(data, block=0, field=812):
    return len(data) - SECTOR + block * BLOCK + field


class Corpus:
    """~25 good and bad signed images, built from four app images and two espsecure keys."""

    def __init__(self, folder, keys):
        A, B = keys["A"], keys["B"]
        self.folder = folder
        self.files = {}
        img = {
            "odd": build_image.build_image("1.1.0", size=100000, seed=1),     # padded by espsecure
            "aligned": build_image.build_image("1.1.1", size=65536, seed=2),  # no padding
            "small": build_image.build_image("1.1.2", seed=3),
            "big": build_image.build_image("1.2.0", size=300 * 1024 + 48, seed=4, secure_version=3),
        }
        for name, data in img.items():
            self.put("unsigned_" + name, data)
        s = {}
        for name in img:
            s[name] = self.signed("signed_" + name, "unsigned_" + name, A)
        s["AB"] = self.signed("signed_AB", "unsigned_odd", A, B)
        s["BA"] = self.signed("signed_BA", "unsigned_odd", B, A)
        self.signed("signed_B", "unsigned_odd", B)
        sign(self.files["signed_B"], self.path("signed_B_then_A"), A, append=True)
        self.files["signed_B_then_A"] = self.path("signed_B_then_A")
        good = s["odd"]
        self.put("flip_header", flip(good, 40))
        self.put("flip_middle", flip(good, 50000))
        self.put("flip_last_image_byte", flip(good, 100000 - 1))
        self.put("flip_padding", flip(good, 100000 + 10))
        self.put("flip_big_end", flip(s["big"], len(img["big"]) - 40))
        self.put("flip_signature", flip(good, sig_at(good) + 100))
        self.put("flip_signature_crc_fixed", fix_crc(flip(good, sig_at(good) + 100), 0))
        self.put("flip_digest_crc_fixed", fix_crc(flip(good, sig_at(good, field=4) + 5), 0))
        self.put("bad_crc", flip(good, sig_at(good, field=1196)))
        self.put("no_magic", flip(good, sig_at(good, field=0), 0xFF))
        self.put("truncated_sector", good[:-100])
        self.put("sector_cut_off", good[:-SECTOR])
        self.put("AB_block0_crc_bad", flip(s["AB"], sig_at(s["AB"], 0, 1196)))
        self.put("BA_block0_crc_bad", flip(s["BA"], sig_at(s["BA"], 0, 1196)))
        self.put("BA_block1_sig_bad", fix_crc(flip(s["BA"], sig_at(s["BA"], 1) + 7), 1))
        # B signed another image; A's block, appended after the change, signs this one
        self.put("stale_B", flip(self.files["signed_B"].read_bytes(), 50000))
        sign(self.files["stale_B"], self.path("stale_B_then_A"), A, append=True)
        self.files["stale_B_then_A"] = self.path("stale_B_then_A")

    def path(self, name):
        return self.folder / (name + ".bin")

    def put(self, name, data):
        p = self.path(name)
        p.write_bytes(data)
        self.files[name] = p
        return data

    def signed(self, name, src, *keys):
        sign(self.files[src], self.path(name), *keys)
        self.files[name] = self.path(name)
        return self.path(name).read_bytes()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, keys):
    c = Corpus(tmp_path_factory.mktemp("corpus"), keys)
    names = sorted(c.files)
    jobs = [{"path": str(c.files[n]), "trusted": [keys["A"].digest]} for n in names]
    results = verify_on_device(tmp_path_factory.mktemp("run"), jobs)
    c.device = dict(zip(names, results))
    return c


def test_images_signed_by_espsecure_are_accepted(corpus, keys):
    for name, block in [("signed_odd", 0), ("signed_aligned", 0), ("signed_small", 0),
                        ("signed_big", 0), ("signed_AB", 0), ("signed_BA", 1),
                        ("signed_B_then_A", 1), ("BA_block0_crc_bad", 1)]:
        r = corpus.device[name]
        assert r == {"ok": True, "block": block, "key": keys["A"].digest}, (name, r)


@pytest.mark.parametrize("name,reason", [
    ("unsigned_odd", "unsigned"),
    ("unsigned_aligned", "unsigned"),
    ("sector_cut_off", "unsigned"),
    ("no_magic", "unsigned"),
    ("signed_B", "unknown key"),
    ("AB_block0_crc_bad", "unknown key"),
    ("flip_header", "hash mismatch"),
    ("flip_middle", "hash mismatch"),
    ("flip_last_image_byte", "hash mismatch"),
    ("flip_padding", "hash mismatch"),
    ("flip_big_end", "hash mismatch"),
    ("flip_digest_crc_fixed", "hash mismatch"),
    ("stale_B_then_A", "hash mismatch"),  # as espsecure: any block over another image refuses
    ("flip_signature_crc_fixed", "bad signature"),
    ("BA_block1_sig_bad", "bad signature"),
    ("flip_signature", "bad signature block CRC"),
    ("bad_crc", "bad signature block CRC"),
    ("truncated_sector", "truncated signature sector"),
])
def test_bad_images_are_refused_with_the_reason(corpus, name, reason):
    r = corpus.device[name]
    assert r["ok"] is False and r["reason"] == reason, (name, r)


def test_device_and_espsecure_agree_on_the_corpus(corpus, keys):
    verdicts = {}
    for name, path in sorted(corpus.files.items()):
        proc = espsecure("verify-signature", "--version", "2", "--keyfile", keys["A"].pub, path,
                         check=False)
        verdicts[name] = (proc.returncode == 0, corpus.device[name]["ok"])
    assert len(verdicts) >= 20
    disagree = {n: v for n, v in verdicts.items() if v[0] != v[1]}
    assert not disagree, disagree
    assert 5 <= sum(v[0] for v in verdicts.values()) <= len(verdicts) - 10  # both kinds present


def test_chunk_sizes_do_not_matter(tmp_path, corpus, keys):
    jobs = []
    for name in ("signed_odd", "flip_padding", "truncated_sector"):
        for chunk in (1, 1000, 4096, 5000, 65536):
            jobs.append({"path": str(corpus.files[name]), "trusted": [keys["A"].digest],
                         "chunk": chunk})
    got = verify_on_device(tmp_path, jobs)
    for i in range(0, len(got), 5):
        assert got[i:i + 5] == [got[i]] * 5, got[i:i + 5]
    assert got[0]["ok"] is True and got[5]["reason"] == "hash mismatch"
    assert got[10]["reason"] == "truncated signature sector"


def test_trust_policy_cases(tmp_path, corpus, keys):
    good = str(corpus.files["signed_odd"])
    unsigned = str(corpus.files["unsigned_odd"])
    got = verify_on_device(tmp_path, [
        {"path": good, "trusted": [keys["B"].digest, keys["A"].digest]},  # A among several
        {"path": good, "trusted": [keys["B"].digest]},
        {"path": good, "trusted": []},                                   # required, no keys
        {"path": unsigned, "trusted": [keys["A"].digest], "required": False},
        {"path": good, "trusted": [keys["B"].digest], "required": False},  # signed: checked
    ])
    assert got[0] == {"ok": True, "block": 0, "key": keys["A"].digest}
    assert got[1]["reason"] == "unknown key"
    assert got[2]["reason"] == "unknown key" and got[2]["detail"] == "no trusted key is configured"
    assert got[3] == {"ok": False, "block": None, "key": None}  # allowed, not verified
    assert got[4]["reason"] == "unknown key"


def test_known_stricter_than_espsecure(tmp_path, corpus, keys):
    """Two files espsecure verify-signature accepts and the device refuses, as the ESP32-S3's
    bootloader would: espsecure checks the signature with the key it is given and never looks
    at the key inside the block (the chip trusts that key by its digest); and it takes the file's
    last sector, where the bootloader reads the sector at ALIGN_UP(image length, 4 KiB)."""
    good = corpus.files["signed_odd"].read_bytes()
    tampered_key = tmp_path / "tampered_key.bin"
    tampered_key.write_bytes(fix_crc(flip(good, sig_at(good, field=36) + 3), 0))
    resigned = sign(corpus.files["signed_odd"], tmp_path / "resigned.bin", keys["A"])
    for path in (tampered_key, resigned):
        assert espsecure("verify-signature", "--version", "2", "--keyfile", keys["A"].pub,
                         path, check=False).returncode == 0
    info = espsecure("signature-info-v2", tampered_key).stdout
    assert keys["A"].digest not in info.replace(" ", "")  # the block names another key
    got = verify_on_device(tmp_path, [{"path": str(p), "trusted": [keys["A"].digest]}
                                      for p in (tampered_key, resigned)])
    assert got[0]["reason"] == "unknown key"
    assert got[1]["reason"] == "bad signed image layout"
    assert got[1]["detail"] == "4096 bytes after the signature sector"


def test_update_allocates_nothing_per_chunk(corpus, keys):
    r = mpy_json(r'''
import gc, json, binascii
from firmware import secure_boot
path = %r
buf = bytearray(4096)
def feed(f, sink, count):
    for _ in range(count):
        f.readinto(buf)
        if sink is not None:
            sink(buf)
def allocated(sink):
    with open(path, "rb") as f:
        f.readinto(buf)
        if sink is not None:
            sink(buf)  # the first chunk walks the image's headers
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        feed(f, sink, 20)
        n = gc.mem_alloc() - before
        gc.enable()
        feed(f, sink, 1000)
    return n
trusted = [binascii.unhexlify(%r)]
loop = allocated(None)
steady = allocated(secure_boot.SignatureCheck(trusted).update) - loop
gc.collect()
before = gc.mem_alloc()
chk = secure_boot.SignatureCheck(trusted)
gc.collect()
print(json.dumps({"steady": steady, "held": gc.mem_alloc() - before}))
''' % (str(corpus.files["signed_big"]), keys["A"].digest))
    assert r["steady"] == 0, r           # update() allocates nothing per chunk
    assert r["held"] < 1024, r           # what a check keeps for the whole update


@pytest.mark.parametrize("free,fits", [(8192, True), (2048, False)])
def test_verify_fits_in_8k_of_free_heap(corpus, keys, free, fits):
    """finish() (sector read into the caller's buffer, CRCs, key digest, RSA-PSS) with ballast
    leaving `free` bytes: 8 KiB is enough, 2 KiB is not (so the ballast really bites)."""
    args = {"path": str(corpus.files["signed_odd"]), "digest": keys["A"].digest}
    proc = run_mpy("ARGS = %r\nFREE = %d\n" % (json.dumps(args), free) + bench_signature.FIT,
                   check=False)
    if fits:
        assert proc.returncode == 0 and '"ok": true' in proc.stdout, proc.stdout + proc.stderr
    else:
        assert proc.returncode != 0 and "MemoryError" in proc.stdout + proc.stderr, proc.stdout


# --- RSA-PSS against the `cryptography` package (what espsecure itself signs with) ----------

def test_rsa_pss_against_cryptography(keys):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
    key = serialization.load_pem_private_key(keys["A"].pem.read_bytes(), None)
    e3 = rsa.generate_private_key(public_exponent=3, key_size=3072)
    digest = bytes(range(32))
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    pre = utils.Prehashed(hashes.SHA256())
    cases = []  # [signature, n, e, digest signed?] as little-endian hex, like a signature block
    for k, pad_ in [(key, pss), (e3, pss),
                    (key, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20)),
                    (key, padding.PKCS1v15()),
                    (key, padding.PSS(mgf=padding.MGF1(hashes.SHA1()), salt_length=32))]:
        sig = int.from_bytes(k.sign(digest, pad_, pre), "big")
        nums = k.public_key().public_numbers()
        cases.append([sig, nums.n, nums.e, True])
    s, n, e, _ = cases[0]
    cases += [[s, n, e, False],                # another digest
              [(1 << 3072) - 1, n, e, True],   # s >= n
              [s, n, e + 2, True],             # another exponent
              [s ^ (1 << 1000), n, e, True]]   # one bit of the signature
    le = [[c[0].to_bytes(384, "little").hex(), c[1].to_bytes(384, "little").hex(), c[2], c[3]]
          for c in cases]
    r = mpy_json(r'''
import json, binascii
from firmware import rsa_pss
out = []
for s, n, e, same in json.loads(%r):
    d = bytes(range(32)) if same else bytes(32)
    out.append(rsa_pss.verify(d, binascii.unhexlify(s), binascii.unhexlify(n), e, 3072))
print(json.dumps(out))
''' % json.dumps(le))
    assert r == [True, True, False, False, False, False, False, False, False]


# --- the trust policy from config and efuse -------------------------------------------------

def test_policy_from_config_and_efuse(keys):
    a, b = keys["A"].digest, keys["B"].digest
    spaced = " ".join(a[i:i + 2] for i in range(0, 64, 2))  # as signature-info-v2 prints it
    cases = [
        [{"require_signature": None, "trusted_keys": []}, []],          # nothing: as before
        [{"trusted_keys": [a]}, []],                                     # a key: required
        [{"trusted_keys": [spaced.upper(), a]}, []],                     # same key twice
        [{"require_signature": False, "trusted_keys": [a]}, []],         # signed ones checked
        [{"require_signature": True}, []],                               # required, no key
        [{"require_signature": False}, [b]],                             # efuse wins
        [{"trusted_keys": ["abc"]}, []],                                 # typo: still required
        [{"trusted_keys": a}, []],                                       # not a list
        [{"require_signature": "yes", "trusted_keys": [a]}, [a]],
        [None, []],
    ]
    r = mpy_json(r'''
import json, binascii
from firmware import secure_boot
A = binascii.unhexlify(%r)
out = []
for cfg, efuse in json.loads(%r):
    p = secure_boot.policy(cfg, [binascii.unhexlify(d) for d in efuse])
    out.append([len(p.trusted), p.required, p.efuse_keys, len(p.errors), p.check() is not None,
                A in p.trusted])
print(json.dumps(out))
''' % (a, json.dumps(cases)))
    assert r == [
        [0, False, 0, 0, False, False],
        [1, True, 0, 0, True, True],
        [1, True, 0, 0, True, True],
        [1, False, 0, 0, True, True],
        [0, True, 0, 0, True, False],
        [1, True, 1, 0, True, False],
        [0, True, 0, 1, True, False],
        [0, True, 0, 1, True, False],
        [1, True, 1, 1, True, True],
        [0, False, 0, 0, False, False],
    ]


# --- anti-rollback ------------------------------------------------------------------------------

def test_secure_version_floor(tmp_path):
    images = {}
    for sv in (0, 2, 3, 7):
        p = tmp_path / ("sv%d.bin" % sv)
        p.write_bytes(build_image.build_image("2.0.%d" % sv, secure_version=sv))
        images[sv] = str(p)
    r = mpy_json(FAKE + r'''
from firmware import anti_rollback
out = []
for path, running, efuse in json.loads(%r):
    sv = image_scan.read_app_desc(FilePartition(path, 1 << 20)).secure_version
    try:
        anti_rollback.check(sv, running, efuse)
        out.append([sv, None])
    except anti_rollback.RollbackError as e:
        out.append([sv, e.reason])
print(json.dumps(out))
''' % json.dumps([[images[3], 3, 0], [images[7], 3, 0], [images[2], 3, 0], [images[3], 0, 2],
                  [images[2], 2, 3], [images[0], None, None], [images[0], 1, 0],
                  [images[7], 7, 7]]))
    assert r == [
        [3, None],
        [7, None],
        [2, "secure_version 2 is below the running image's 3"],
        [3, None],
        [2, "secure_version 2 is below efuse SECURE_VERSION 3"],
        [0, None],
        [0, "secure_version 0 is below the running image's 1"],
        [7, None],
    ]


# --- the host tool: from a new key to a fleet config, and signing -------------------------------

def test_sign_image_tool_new_key_to_fleet_config(tmp_path):
    key = tmp_path / "keys" / "fleet.pem"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"wifi": {"ssid": "Lab"}, "update": {"trusted_keys": ["00" * 32]}}))

    def tool(*args):
        return subprocess.run([sys.executable, SIGN_TOOL] + [str(a) for a in args],
                              capture_output=True, text=True, timeout=120)
    p = tool("new-key", key, "--config", cfg)
    assert p.returncode == 0, p.stderr
    c = json.loads(cfg.read_text())
    assert c["wifi"] == {"ssid": "Lab"} and c["update"]["require_signature"] is True
    old, new = c["update"]["trusted_keys"]
    assert old == "00" * 32
    out = tmp_path / "d.bin"
    espsecure("digest-sbv2-public-key", "--keyfile", key, "--output", out)
    assert new == out.read_bytes().hex() and new in p.stdout
    assert (tmp_path / "keys" / "fleet.pub.pem").exists()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert tool("new-key", key).returncode == 1  # never overwrites a key

    img = tmp_path / "app.bin"
    img.write_bytes(build_image.build_image("3.0.0", size=70000, seed=9))
    signed = tmp_path / "app-signed.bin"
    assert tool("sign", "--key", key, img, "-o", signed).returncode == 0
    assert espsecure("verify-signature", "--version", "2", "--keyfile", key, signed,
                     check=False).returncode == 0
    assert tool("verify", "--key", tmp_path / "keys" / "fleet.pub.pem", signed).returncode == 0
    assert tool("verify", "--key", tmp_path / "keys" / "fleet.pub.pem", img).returncode == 1
    got = verify_on_device(tmp_path, [{"path": str(signed), "trusted": c["update"]["trusted_keys"]}])
    assert got[0]["ok"] is True and got[0]["key"] == new

    snippet = tool("digest", tmp_path / "keys" / "fleet.pub.pem")
    assert snippet.returncode == 0
    body = snippet.stdout.split("config snippet:", 1)[1]
    assert json.loads(body) == {"update": {"require_signature": True, "trusted_keys": [new]}}


def test_sign_image_tool_keeps_keys_out_of_the_repository():
    p = subprocess.run([sys.executable, SIGN_TOOL, "new-key", os.path.join(ROOT, "fleet.pem")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "refusing" in p.stderr
    assert not os.path.exists(os.path.join(ROOT, "fleet.pem"))


def test_sim_board_efuse_digests_and_secure_version(sim_root, keys):
    with open(os.path.join(sim_root, "sim.json")) as f:
        sim = json.load(f)
    out = []
    for extra in ({}, {"secure_boot_digests": [keys["A"].digest], "efuse_secure_version": 4}):
        sim.update(extra)
        with open(os.path.join(sim_root, "sim.json"), "w") as f:
            json.dump(sim, f)
        out.append(mpy_json(r'''
import json, binascii
from firmware.board import sim
b = sim.Board({})
print(json.dumps([[binascii.hexlify(d).decode() for d in b.secure_boot_digests()],
                  b.efuse_secure_version()]))
''', cwd=sim_root))
    assert out == [[[], 0], [[keys["A"].digest], 4]]


def test_build_image_cli_sets_secure_version(tmp_path):
    out = tmp_path / "sv.bin"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_image.py"), "--version",
                        "4.0.0", "--secure-version", "9", "-o", out], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    info = subprocess.run([os.path.join(os.path.dirname(sys.executable), "esptool"), "--chip",
                           "esp32s3", "image-info", out], capture_output=True, text=True)
    assert "Secure version: 9" in info.stdout, info.stdout
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_image.py"),
                          "--version", "4.0.0", "--secure-version", "-1", "-o", out],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "0..4294967295" in bad.stderr
