# Firmware versions: dot-separated numbers, compared numerically (xiaozhi protocol).
#
# "1.2" == "1.2.0" (missing parts are 0); a leading "v" is tolerated ("v1.24.0"); a suffix after
# "-" or "+" ("1.0.0-dirty", "1.29.0-preview.12") is build metadata and ignored, since ESP app
# descriptors often carry `git describe` output. Anything else raises ValueError; callers decide
# what a bad version means (never a crash).

MAX_PARTS = 8
MAX_DIGITS = 9  # keeps every part a small int on the device


def parse(text):
    """Tuple of ints for a version string; ValueError when it is not a version."""
    if not isinstance(text, str):
        raise ValueError("version is not a string")
    s = text.strip()
    if s[:1] in ("v", "V"):
        s = s[1:]
    for sep in "-+":
        i = s.find(sep)
        if i >= 0:
            s = s[:i]
    parts = s.split(".")
    if not s or len(parts) > MAX_PARTS:
        raise ValueError("malformed version %r" % text)
    out = []
    for p in parts:
        if not p or len(p) > MAX_DIGITS or not p.isdigit():
            raise ValueError("malformed version %r" % text)
        out.append(int(p))
    while len(out) > 1 and out[-1] == 0:  # "1.2.0" and "1.2" are the same version
        out.pop()
    return tuple(out)


def compare(a, b):
    """-1, 0 or 1 as version a is older than, the same as, or newer than b (ValueError if malformed)."""
    pa, pb = parse(a), parse(b)
    n = max(len(pa), len(pb))
    pa = pa + (0,) * (n - len(pa))
    pb = pb + (0,) * (n - len(pb))
    return (pa > pb) - (pa < pb)


def is_newer(offered, running):
    """True when `offered` is a newer version than `running` (ValueError if either is malformed)."""
    return compare(offered, running) > 0


def same(a, b):
    """True when a and b name the same version ("v1.2" and "1.2.0" do); strings that are not
    versions must match exactly."""
    try:
        return compare(a, b) == 0
    except ValueError:
        return a == b


def is_valid(text):
    try:
        parse(text)
        return True
    except ValueError:
        return False
