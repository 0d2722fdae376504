# CA certificates for mbedtls: the unix port's ssl.load_verify_locations parses DER only, so a
# PEM file or bundle is split into one DER blob per certificate.
import binascii


def ders(ca):
    """PEM text/bytes (one or many certificates) or DER bytes -> list of DER blobs.
    Raises ValueError when nothing usable is inside."""
    if isinstance(ca, str):
        ca = ca.encode()
    if not bytes(ca[:64]).lstrip().startswith(b"-----"):
        return [bytes(ca)]
    out = []
    b64 = None
    for line in ca.split(b"\n"):
        line = line.strip()
        if line.startswith(b"-----BEGIN CERTIFICATE"):
            b64 = []
        elif line.startswith(b"-----END CERTIFICATE"):
            if b64 is not None:
                try:
                    out.append(binascii.a2b_base64(b"".join(b64)))
                except ValueError:
                    raise ValueError("invalid CA certificate")
            b64 = None
        elif b64 is not None and line:
            b64.append(line)
    if not out:
        raise ValueError("CA holds no certificate")
    return out
