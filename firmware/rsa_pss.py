# RSASSA-PSS signature verification with SHA-256, MGF1-SHA-256 and a 32-byte salt: the scheme of
# ESP-IDF Secure Boot V2 on the ESP32-S3 (espsecure signs with PSS(MGF1(SHA256), salt_length=32)
# over the prehashed image digest; ESP-IDF checks it with mbedtls_rsa_rsassa_pss_verify).
#
# RFC 8017 8.1.2 (RSAVP1: m = s^e mod n) and 9.1.2 (EMSA-PSS-VERIFY), with emBits = modBits - 1.
# Public-key operation only: MicroPython's big integers, hashlib.sha256, no C extension. Nothing
# here is secret, so nothing needs to run in constant time.
#
# Heap: the modular exponentiation is done here, square and multiply, dropping each product as
# soon as it is reduced; built-in pow(s, e, n) keeps more temporaries alive at once (its peak is
# about 0.6 KiB higher for a 3072-bit modulus on the unix port).
import hashlib

H_LEN = 32
S_LEN = 32


def _modexp(s, e, n):
    """s**e % n, left to right, at most one unreduced product alive at a time."""
    x = s
    bit = 1
    while bit <= e:
        bit <<= 1
    bit >>= 2
    while bit:
        y = x * x
        x = None
        x = y % n
        y = None
        if e & bit:
            y = x * s
            x = None
            x = y % n
            y = None
        bit >>= 1
    return x


def _mgf1_xor(seed, out, n):
    """out[0:n] ^= MGF1-SHA256(seed, n) (RFC 8017 B.2.1), in place."""
    pos = 0
    counter = 0
    while pos < n:
        h = hashlib.sha256(seed)
        h.update(counter.to_bytes(4, "big"))
        d = h.digest()
        k = min(H_LEN, n - pos)
        for i in range(k):
            out[pos + i] ^= d[i]
        pos += k
        counter += 1


def verify(m_hash, sig_le, n_le, e, mod_bits):
    """True iff `sig_le` is a valid RSASSA-PSS signature of the 32-byte digest `m_hash` under the
    public key (n, e) whose modulus has exactly `mod_bits` bits. The signature and the modulus
    are little-endian byte strings, as the ESP32 RSA peripheral (and the signature block) keep
    them."""
    if len(m_hash) != H_LEN or mod_bits < 8 * (H_LEN + S_LEN) + 9 or e < 3 or not e & 1:
        return False
    n = int.from_bytes(n_le, "little")
    if n >> (mod_bits - 1) != 1:
        return False
    s = int.from_bytes(sig_le, "little")
    if s >= n or s == 0:
        return False
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) // 8
    m = _modexp(s, e, n)
    s = n = None
    if m >> em_bits:
        return False  # the leftmost 8*emLen - emBits bits of EM must be zero
    em = m.to_bytes(em_len, "big")
    m = None
    em = bytearray(em)
    if em[em_len - 1] != 0xBC:
        return False
    db_len = em_len - H_LEN - 1
    h = bytes(em[db_len:db_len + H_LEN])
    _mgf1_xor(h, em, db_len)  # em[0:db_len] is now DB
    em[0] &= 0xFF >> (8 * em_len - em_bits)
    ps_len = em_len - H_LEN - S_LEN - 2
    for i in range(ps_len):
        if em[i]:
            return False
    if em[ps_len] != 0x01:
        return False
    m2 = hashlib.sha256(bytes(8))
    m2.update(m_hash)
    m2.update(em[db_len - S_LEN:db_len])
    return m2.digest() == h
