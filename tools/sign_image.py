#!/usr/bin/env python3
"""Fleet signing keys and signed images (ESP-IDF Secure Boot V2, RSA-3072 / RSA-PSS), by espsecure.

From a new key to a fleet that only accepts images signed with it, two commands:

    python tools/sign_image.py new-key ~/keys/fleet.pem --config config.json
    make deploy PORT=/dev/ttyACM0

and to sign each release:

    python tools/sign_image.py sign --key ~/keys/fleet.pem build/app.bin -o build/app-signed.bin

Commands (each runs the pinned `espsecure` of esptool; nothing here does any cryptography):

- new-key KEY [--config FILE]: `espsecure generate-signing-key --version 2 --scheme rsa3072 KEY`,
  `extract-public-key` into KEY's name with .pub.pem, then what `digest` does.
- digest KEY_OR_PUBLIC_KEY [--config FILE]: `espsecure digest-sbv2-public-key`; prints the digest
  in hex and the config snippet {"update": {"require_signature": true, "trusted_keys": [...]}}.
  With --config the digest is added to that config file's update.trusted_keys (created if
  missing; other keys are kept) -- run it once per key to trust several (key rotation).
- sign --key KEY [--key KEY2 ...] IMAGE -o OUT [--append]: `espsecure sign-data --version 2`: the
  image padded to 4 KiB plus a signature sector with one block per key (up to three);
  --append adds blocks to an already signed image.
- verify --key KEY_OR_PUBLIC_KEY SIGNED: `espsecure verify-signature --version 2`.

A private key is refused inside this repository except under build/ (throwaway demo keys), so
that no key can be committed by accident. Keep the real one offline (docs/DEPLOY.md).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")


class ToolError(Exception):
    pass


def espsecure(*args):
    """Run the venv's espsecure; return its stdout, raise ToolError with its message on failure."""
    proc = subprocess.run([sys.executable, "-m", "espsecure"] + [str(a) for a in args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise ToolError("espsecure %s failed: %s" % (args[0], msg[-1] if msg else proc.returncode))
    return proc.stdout


def _inside(path, folder):
    path = os.path.realpath(path)
    folder = os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def check_key_location(path):
    if _inside(path, ROOT) and not _inside(path, BUILD):
        raise ToolError("refusing to keep a private key inside the repository (%s): put it "
                        "outside, or under build/ for a throwaway demo key" % path)


def public_key_path(key):
    base = key[:-4] if key.endswith(".pem") else key
    return base + ".pub.pem"


def new_key(key):
    """Generate an RSA-3072 signing key and its public key; return the public key's path."""
    check_key_location(key)
    if os.path.exists(key):
        raise ToolError("%s exists: not overwriting a key" % key)
    folder = os.path.dirname(os.path.abspath(key))
    os.makedirs(folder, exist_ok=True)
    espsecure("generate-signing-key", "--version", "2", "--scheme", "rsa3072", key)
    os.chmod(key, 0o600)
    pub = public_key_path(key)
    espsecure("extract-public-key", "--version", "2", "--keyfile", key, pub)
    return pub


def digest(keyfile):
    """The key's Secure Boot V2 digest in hex, as espsecure digest-sbv2-public-key computes it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "digest.bin")
        espsecure("digest-sbv2-public-key", "--keyfile", keyfile, "--output", out)
        with open(out, "rb") as f:
            raw = f.read()
    if len(raw) != 32:
        raise ToolError("espsecure wrote a %d-byte digest" % len(raw))
    return raw.hex()


def snippet(digests):
    return {"update": {"require_signature": True, "trusted_keys": list(digests)}}


def add_to_config(path, hex_digest):
    """Add the digest to the config file's update.trusted_keys and switch signatures on."""
    cfg = {}
    if os.path.exists(path):
        with open(path) as f:
            try:
                cfg = json.load(f)
            except ValueError as e:
                raise ToolError("%s is not valid JSON: %s" % (path, e))
        if not isinstance(cfg, dict):
            raise ToolError("%s does not hold a JSON object" % path)
    upd = cfg.get("update")
    if not isinstance(upd, dict):
        upd = cfg["update"] = {}
    keys = upd.get("trusted_keys")
    if not isinstance(keys, list):
        keys = upd["trusted_keys"] = []
    if hex_digest not in keys:
        keys.append(hex_digest)
    upd["require_signature"] = True
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return cfg


def sign(keys, image, output, append=False):
    if not 1 <= len(keys) <= 3:
        raise ToolError("one to three keys (a signature sector has three blocks)")
    args = ["sign-data", "--version", "2"]
    for k in keys:
        args += ["--keyfile", k]
    if append:
        args.append("--append-signatures")
    espsecure(*(args + ["--output", output, image]))


def is_signed(data):
    """True when `data` ends in a Secure Boot V2 signature sector (a block's magic 0xE7 and
    version 0x02 at the start of its last 4 KiB): served and pushed as it is."""
    return len(data) > 4096 and len(data) % 4096 == 0 and data[-4096:-4094] == b"\xe7\x02"


def sign_bytes(image, keys):
    """`image` (bytes) signed with `keys` by espsecure; an already signed image is returned
    unchanged (signing it again would sign the old sector as part of the image)."""
    if is_signed(image):
        return bytes(image)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "image.bin"), os.path.join(tmp, "signed.bin")
        with open(src, "wb") as f:
            f.write(image)
        sign(keys, src, dst)
        with open(dst, "rb") as f:
            return f.read()


def demo_key(folder=BUILD, name="demo-signing-key.pem"):
    """A throwaway signing key under build/ (made once, never committed); (key, hex digest)."""
    key = os.path.join(folder, name)
    if not os.path.exists(key):
        new_key(key)
    return key, digest(public_key_path(key))


def verify(key, signed):
    espsecure("verify-signature", "--version", "2", "--keyfile", key, signed)


def _report_digest(keyfile, config):
    d = digest(keyfile)
    print("key digest: %s" % d)
    if config:
        add_to_config(config, d)
        print("%s: trusted_keys now include it, require_signature is on" % config)
    else:
        print("config snippet:\n%s" % json.dumps(snippet([d]), indent=2))
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(description="Secure Boot V2 keys and signed images (espsecure).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("new-key", help="generate an RSA-3072 signing key")
    p.add_argument("key")
    p.add_argument("--config", help="add the key's digest to this device config file")
    p = sub.add_parser("digest", help="a key's digest and config snippet")
    p.add_argument("key", help="private or public key (PEM)")
    p.add_argument("--config", help="add the digest to this device config file")
    p = sub.add_parser("sign", help="sign an image")
    p.add_argument("--key", action="append", required=True, help="private key (repeat for more blocks)")
    p.add_argument("--append", action="store_true", help="add blocks to a signed image")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True)
    p = sub.add_parser("verify", help="verify a signed image")
    p.add_argument("--key", required=True)
    p.add_argument("signed")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "new-key":
            pub = new_key(args.key)
            print("private key: %s (keep it offline)\npublic key: %s" % (args.key, pub))
            _report_digest(pub, args.config)
        elif args.cmd == "digest":
            _report_digest(args.key, args.config)
        elif args.cmd == "sign":
            sign(args.key, args.image, args.output, args.append)
            print("%s: signed with %d key(s)" % (args.output, len(args.key)))
        else:
            verify(args.key, args.signed)
            print("%s: signature verifies" % args.signed)
    except ToolError as e:
        print("sign_image: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
