# RSASSA-PSS signature verification with SHA-256, MGF1-SHA-256 and a 32-byte salt: the scheme of
# ESP-IDF Secure Boot V2 on the ESP32-S3 (espsecure signs with PSS(MGF1(SHA256), salt_length=32)
# over the prehashed image digest; ESP-IDF checks it with mbedtls_rsa_rsassa_pss_verify).
#
# RFC 8017 8.1.2 (RSAVP1: m = s^e mod n) and 9.1.2 (EMSA-PSS-VERIFY), with emBits = modBits - 1.
# Public-key operation only: pow() on MicroPython's big integers, hashlib.sha256, no C extension.
# Nothing here is secret, so nothing needs to run in constant time.
import hashlib

H_LEN = 32
S_LEN = 32


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


def verify(m_hash, s, n, e, mod_bits):
    """True iff the integer `s` is a valid RSASSA-PSS signature of the 32-byte digest `m_hash`
    under the public key (n, e) whose modulus has exactly `mod_bits` bits."""
    if len(m_hash) != H_LEN or mod_bits < 8 * (H_LEN + S_LEN) + 9 or n >> (mod_bits - 1) != 1:
        return False
    if not 0 < s < n:
        return False
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) // 8
    m = pow(s, e, n)
    if m >> em_bits:
        return False  # the leftmost 8*emLen - emBits bits of EM must be zero
    em = bytearray(m.to_bytes(em_len, "big"))
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
