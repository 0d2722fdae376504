# Secure Boot V2 signatures of OTA images, checked on the device before the boot partition changes.
#
# A signed file is what `espsecure sign-data --version 2` writes (esptool 5.6.0
# espsecure/__init__.py: sign_secure_boot_v2, generate_rsa_signature_block): the image, 0xFF
# padding up to a 4 KiB boundary, then one 4 KiB signature sector. The sector holds up to three
# 1216-byte blocks, the rest is 0xFF. ESP-IDF looks for it at ALIGN_UP(image length, 4096)
# (bootloader_support/src/secure_boot_v2/secure_boot_signatures_app.c,
# esp_secure_boot_get_signature_blocks_for_running_app). A block (ets_secure_boot_sig_block in
# esp_rom/include/esp32s3/rom/secure_boot.h):
#      0  magic 0xE7, version 0x02 (RSA-3072 PSS), 2 reserved bytes
#      4  image digest: SHA-256 of everything before the sector (image and padding)
#     36  key (ets_rsa_pubkey_t): n (384 bytes, little-endian), e (u32), rinv (384 B), m' (u32)
#    812  signature (384 bytes, little-endian)
#   1196  CRC-32 of bytes 0..1195 (esp_rom_crc32_le(0, ...), the same as zlib/binascii crc32)
#   1200  16 bytes of padding
# A key is trusted by the SHA-256 of its 776-byte key field: what ESP-IDF computes over
# &block.key, what `espsecure digest-sbv2-public-key` writes and what efuse SECURE_BOOT_DIGESTn
# holds (espefuse burn-key-digest burns those bytes unreversed).
#
# Which block counts (secure_boot_signatures_app.c, esp_secure_boot_verify_rsa_signature_block):
# blocks with a bad magic or CRC are skipped, so are blocks whose key is not trusted; the image
# is accepted when one trusted block's RSA-PSS signature verifies over our SHA-256. Stricter, as
# `espsecure verify-signature` is: any CRC-valid RSA block that names another image digest refuses
# the image ("hash mismatch"), whatever its key.
import binascii
import gc
import hashlib
import struct

from firmware import app_image, rsa_pss

SECTOR = 4096
BLOCK_LEN = 1216
BLOCKS = 3
MAGIC = 0xE7
VERSION_RSA = 0x02
CRC_LEN = 1196
DIGEST = 4
KEY = 36
KEY_LEN = 776
N_LEN = 384
SIG = 812
RSA_BITS = 3072

# Reasons, as the log, the screen and the platform's progress `desc` show them.
UNSIGNED = "unsigned"
UNKNOWN_KEY = "unknown key"
BAD_SIGNATURE = "bad signature"
HASH_MISMATCH = "hash mismatch"
BAD_CRC = "bad signature block CRC"
UNSUPPORTED = "unsupported signature scheme"
TRUNCATED = "truncated signature sector"
LAYOUT = "bad signed image layout"

# When no block verifies, the block that got furthest says why.
_RANK = {BAD_CRC: 1, UNSUPPORTED: 2, UNKNOWN_KEY: 3, BAD_SIGNATURE: 4}


class SignatureError(Exception):
    """An image refused for its signature: .reason is one of the reasons above."""

    def __init__(self, reason, detail=None):
        super().__init__(reason if not detail else "%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


def parse_digest(text):
    """32 bytes from a key digest written as 64 hex digits (spaces and colons allowed, as
    `espsecure signature-info-v2` prints them); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("a key digest must be a string of 64 hex digits")
    s = text.strip().replace(" ", "").replace(":", "").lower()
    if len(s) != 64:
        raise ValueError("a key digest has 64 hex digits, not %d" % len(s))
    try:
        return binascii.unhexlify(s)
    except ValueError:
        raise ValueError("a key digest must be hex")


def hex_digest(d):
    return binascii.hexlify(d).decode()


def key_digest(block):
    """SHA-256 of a block's key field: the form trusted keys are given in."""
    return hashlib.sha256(block[KEY:KEY + KEY_LEN]).digest()


def _block_status(block, digest, trusted):
    """None when the block verifies, else the reason it does not; "" when there is no block.
    With trusted None, only the block's image digest is checked (None: it names our image)."""
    if block[0] != MAGIC:
        return ""
    if binascii.crc32(block[:CRC_LEN]) & 0xFFFFFFFF != struct.unpack_from("<I", block, CRC_LEN)[0]:
        return BAD_CRC
    if block[1] != VERSION_RSA:
        return UNSUPPORTED  # ECDSA blocks (version 3) are for other chips; the S3 boots RSA only
    if bytes(block[DIGEST:DIGEST + 32]) != digest:
        return HASH_MISMATCH
    if trusted is None:
        return None
    if key_digest(block) not in trusted:
        return UNKNOWN_KEY
    e = struct.unpack_from("<I", block, KEY + N_LEN)[0]
    if not rsa_pss.verify(digest, block[SIG:SIG + N_LEN], block[KEY:KEY + N_LEN], e, RSA_BITS):
        return BAD_SIGNATURE
    return None


def check_sector(sector, digest, trusted):
    """Index of the block of `sector` (4 KiB, a memoryview is best) that verifies `digest` (the
    SHA-256 of the signed part) under a trusted key; SignatureError otherwise."""
    mv = memoryview(sector)
    good = None
    worst = None
    for i in range(BLOCKS):
        # once a block has verified, the others are only checked for naming another image
        st = _block_status(mv[i * BLOCK_LEN:(i + 1) * BLOCK_LEN], digest,
                           trusted if good is None else None)
        if st == HASH_MISMATCH:
            raise SignatureError(HASH_MISMATCH, "block %d was signed over another image" % i)
        if st is None:
            if good is None:
                good = i
        elif st and (worst is None or _RANK[st] > _RANK[worst]):
            worst = st
    if good is not None:
        return good
    if worst is None:
        raise SignatureError(UNSIGNED, "the signature sector holds no signature block")
    if worst == UNKNOWN_KEY and not trusted:
        raise SignatureError(UNKNOWN_KEY, "no trusted key is configured")
    raise SignatureError(worst)


class SignatureCheck:
    """Checks one signed file: update(data) with every byte of it in order, as it streams (any
    chunk sizes), then finish(read) once it is on flash.

    The image's own headers say where it ends (app_image.StreamLength), so the SHA-256 covers
    exactly the signed part, ALIGN_UP(image length, 4 KiB), in the same pass, whether or not the
    file's length was known in advance. The sector itself is read back at the end, from where the
    bootloader will read it. Holds a hash object and a 24-byte header scratch; allocates nothing
    per chunk."""

    def __init__(self, trusted, required=True):
        self.trusted = list(trusted)
        self.required = required
        self._sha = hashlib.sha256()
        self._walk = app_image.StreamLength()
        self.signed = None  # length of the signed part (where the sector starts), once known
        self.total = 0      # bytes fed
        self.block = None   # index of the block that verified
        self.key = None     # hex digest of its key

    def update(self, data):
        off = self.total
        n = len(data)
        self.total = off + n
        signed = self.signed
        if signed is None:
            w = self._walk
            w.feed(off, data)
            if w.length is None:
                self._sha.update(data)  # the last segment header is still ahead: all signed
                return
            signed = self.signed = (w.length + SECTOR - 1) // SECTOR * SECTOR
        if off + n <= signed:
            self._sha.update(data)
        elif off < signed:
            self._sha.update(memoryview(data)[:signed - off])

    def finish(self, read, buf=None):
        """After the last byte: True when a trusted signature verifies, False when the file is an
        unsigned image and signatures are not required; SignatureError otherwise.

        read(offset, view) fills a 4 KiB memoryview with the file's bytes at `offset` (what is on
        flash: the updater's flash reader); buf, a bytearray of at least 4 KiB to read into (the
        updater's chunk buffer is free by then), else one is allocated."""
        try:
            self._finish(read, buf)
        except SignatureError as e:
            if e.reason == UNSIGNED and not self.required:
                return False
            raise
        return True

    def _finish(self, read, buf):
        w = self._walk
        if w.length is None:
            raise SignatureError(LAYOUT, w.error or "the image's headers did not all arrive")
        total = self.total
        signed = self.signed
        if total < w.length:
            raise SignatureError(LAYOUT, "%d of the image's %d bytes arrived" % (total, w.length))
        if total <= signed:
            raise SignatureError(UNSIGNED, "no signature sector after the image")
        if total < signed + SECTOR:
            raise SignatureError(TRUNCATED, "%d of %d bytes" % (total - signed, SECTOR))
        if total > signed + SECTOR:
            raise SignatureError(LAYOUT, "%d bytes after the signature sector" % (total - signed - SECTOR))
        if buf is None or len(buf) < SECTOR:
            buf = bytearray(SECTOR)
        sector = memoryview(buf)[:SECTOR]
        read(signed, sector)
        self.block = check_sector(sector, self._sha.digest(), self.trusted)
        # The RSA temporaries are garbage now: collect before allocating what outlives this
        # call (the key's hex), so it fills a low hole instead of splitting the free heap (the
        # sim's set_boot wants 4 KiB in one piece: without this, a signed update on the unix
        # port needed several KiB more free heap than an unsigned one).
        gc.collect()
        self.key = hex_digest(key_digest(sector[self.block * BLOCK_LEN:]))


class Policy:
    """Which keys are trusted and whether every image must be signed by one of them."""

    def __init__(self, trusted, required, efuse_keys=0, errors=()):
        self.trusted = trusted
        self.required = required
        self.efuse_keys = efuse_keys
        self.errors = list(errors)

    def check(self):
        """A SignatureCheck for the next image, or None when nothing is checked (no key known
        and signatures not required: updates are unauthenticated, as before)."""
        if not self.trusted and not self.required:
            return None
        return SignatureCheck(self.trusted, self.required)

    def describe(self):
        if not self.trusted and not self.required:
            return "updates are unauthenticated: no trusted signing key is configured"
        keys = "%d trusted key(s)" % len(self.trusted)
        if self.efuse_keys:
            keys += ", %d from efuse" % self.efuse_keys
        return "%s; %s" % ("signatures required" if self.required else "signed images are checked", keys)


def policy(update_cfg, efuse_digests=()):
    """The Policy from the config's `update` section and the efuse key digests (32-byte strings
    the board read; Secure Boot on in efuse). Efuse keys count in addition to the config, and
    then a signature is always required: the config cannot switch the hardware's trust off.

    update.require_signature: None (default) = required as soon as any key is configured or in
    efuse; false = unsigned images install, signed ones are checked when a key is known. A
    malformed entry in update.trusted_keys is reported in .errors and, by default, still makes
    signatures required, so a typo does not quietly turn checking off."""
    cfg = update_cfg if isinstance(update_cfg, dict) else {}
    errors = []
    trusted = []
    given = cfg.get("trusted_keys")
    if given is None:
        given = []
    elif not isinstance(given, list):
        errors.append("update.trusted_keys must be a list of hex key digests")
        given = []
    for i, text in enumerate(given):
        try:
            d = parse_digest(text)
        except ValueError as e:
            errors.append("update.trusted_keys[%d]: %s" % (i, e))
            continue
        if d not in trusted:
            trusted.append(d)
    efuse = 0
    for d in efuse_digests:
        efuse += 1
        if d not in trusted:
            trusted.append(bytes(d))
    req = cfg.get("require_signature")
    if req is not None and not isinstance(req, bool):
        errors.append("update.require_signature must be true, false or null")
        req = True
    if efuse:
        required = True
    elif req is None:
        required = bool(trusted or errors)
    else:
        required = req
    return Policy(trusted, required, efuse, errors)
