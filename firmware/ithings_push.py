# Admission of an iThings upgrade push (DESIGN.md section 3): parse_push turns a down message
# into a Push to install, a Rejection to report or an Ignore, before any download or flash
# write. Pure like ithings.py (message formats, step codes), which it builds on.
from firmware import version as version_mod
from firmware.ithings import (STEP_DOWNLOAD_FAILED, STEP_PACKAGE_REFUSED, contains_any, decode,
                              has_files, reply_code, token_of)

_NON_APP = ("bootloader", "partition", "ota_data", "otadata", "nvs", "spiffs", "littlefs",
            "fatfs", "storage", "model", "assets")


class Push:
    """An admitted upgrade push: everything the updater needs."""
    kind = "push"

    def __init__(self, token, version, url, size, md5, name=None, force=False, method="upgrade",
                 delta=False, sha256=None):
        self.token = token
        self.delta = delta  # isDiff 2: the file is a patch against the running image
        self.version = version
        self.url = url
        self.size = size
        self.md5 = md5
        self.name = name
        self.force = force
        self.method = method
        self.sha256 = sha256

    def __repr__(self):  # never prints the URL: its query is a secret
        return "<Push %s v%s %d bytes>" % (self.token, self.version, self.size)


class Rejection:
    """A push refused before any flash write; reported as progress `code` with `reason`."""
    kind = "reject"

    def __init__(self, code, reason, token, version=None):
        self.code = code
        self.reason = reason
        self.token = token
        self.version = version

    def __repr__(self):
        return "<Rejection %d %s>" % (self.code, self.reason)


class Ignore:
    """Not acted on and not answered (malformed, duplicate, busy, already running): logged."""
    kind = "ignore"

    def __init__(self, reason, token=None, version=None):
        self.reason = reason
        self.token = token
        self.version = version

    def __repr__(self):
        return "<Ignore %s>" % self.reason


def _is_md5(s, n=32):
    if not isinstance(s, str) or len(s) != n:
        return False
    for c in s.lower():
        if c not in "0123456789abcdef":
            return False
    return True


def _truthy(v):
    return v is True or v == 1 or (isinstance(v, str) and v.lower() in ("1", "true", "yes"))


def _pick_file(files, board_type):
    """The one app image among several files: a .bin that is not a bootloader/partition/data
    image; when several remain, the one naming this board. None when none or ambiguous."""
    cands = []
    for f in files:
        if not isinstance(f, dict):
            continue
        name = f.get("name")
        if not isinstance(name, str) or not name.lower().endswith(".bin"):
            continue
        if not contains_any(name.lower(), _NON_APP):
            cands.append(f)
    if len(cands) > 1 and board_type:
        mine = [f for f in cands if board_type.lower() in f["name"].lower()]
        if mine:
            cands = mine
    return cands[0] if len(cands) == 1 else None


def _resolve_url(url, http_base):
    """Absolute URL, verbatim (a pre-signed query must not be re-encoded); None when relative
    and there is no base, or not a URL at all."""
    if url.startswith("/"):
        if not http_base:
            return None
        return http_base.rstrip("/") + url
    i = url.find("://")
    if i <= 0 or not url[:i].isalpha():
        return None
    return url


def parse_push(msg, running_version, in_progress_version=None, allowed_schemes=("https", "http"),
               http_base=None, max_size=None, board_type=None, module="default"):
    """Admission of a push (bytes or decoded dict) -> Push, Rejection or Ignore.

    Every check happens here, before any download or flash write: method and fields, isDiff 1/2,
    signMethod md5 (any case), version differs from the running one (unless forced) and from
    the update in progress, size > 0 and <= max_size, URL scheme allowed, one app image.
    """
    obj = decode(msg)
    if obj is None:
        return Ignore("not a JSON object")
    method = obj.get("method")
    if method not in ("upgrade", "reportInfoReply"):
        return Ignore("method %s is not a push" % method)
    if method == "reportInfoReply" and not has_files(obj):
        return Ignore("reportInfoReply without files")
    token = token_of(obj)
    if token is None:
        return Ignore("push without msgToken/clientToken")
    data = obj.get("data")
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = str(version)
    if in_progress_version is not None:  # first push wins; see mqtt_ota for the rule
        if version_mod.same(version, in_progress_version):
            return Ignore("duplicate of the update in progress", token, version)
        return Ignore("busy updating to %s" % in_progress_version, token, version)
    if reply_code(obj) not in (None, 200):
        return Ignore("push with code %s" % obj.get("code"), token, version)
    if not isinstance(data, dict):
        return Rejection(STEP_PACKAGE_REFUSED, "push without data", token)
    if not isinstance(version, str) or not version or len(version) > 31:
        return Rejection(STEP_PACKAGE_REFUSED, "missing or bad version", token)
    force = _truthy(data.get("force")) or _truthy(data.get("isForce"))
    if version_mod.same(version, running_version) and not force:
        return Ignore("already running %s" % version, token, version)
    push_module = data.get("module")
    if push_module not in (None, "") and push_module != module:
        return Rejection(STEP_PACKAGE_REFUSED, "wrong module %s" % push_module, token, version)
    is_diff = data.get("isDiff", 1)  # absent in older pushes: full package; 2: a delta patch
    if is_diff not in (1, "1", 2, "2"):
        return Rejection(STEP_PACKAGE_REFUSED, "isDiff %s not supported" % str(is_diff)[:16], token,
                         version)
    sign = data.get("signMethod", "md5")
    sign = sign.lower() if isinstance(sign, str) else sign
    if sign not in ("md5", "sha256"):  # the platform's two; with SHA256 `signature` holds it
        return Rejection(STEP_PACKAGE_REFUSED, "signMethod %s not supported" % sign, token, version)
    files = data.get("files")
    if isinstance(files, list) and files:
        f = _pick_file(files, board_type)
        if f is None:
            return Rejection(STEP_PACKAGE_REFUSED, "no single app image (.bin) in files", token,
                             version)
    else:
        f = data
        name = f.get("name")
        if isinstance(name, str) and name and not name.lower().endswith(".bin"):
            return Rejection(STEP_PACKAGE_REFUSED, "not an app image (.bin)", token, version)
    size = f.get("size")
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return Rejection(STEP_PACKAGE_REFUSED, "missing or bad size", token, version)
    if max_size is not None and size > max_size:
        return Rejection(STEP_PACKAGE_REFUSED, "image of %d bytes exceeds partition (%d)"
                         % (size, max_size), token, version)
    md5 = f.get("fileMd5")
    sig = f.get("signature")
    sha256 = None
    if sign == "sha256":
        if not _is_md5(sig, 64):
            return Rejection(STEP_PACKAGE_REFUSED, "missing or bad sha256 signature", token, version)
        sha256 = sig.lower()
        md5 = md5 if _is_md5(md5) else None  # fileMd5 alongside it is checked too
    elif md5 in (None, ""):
        md5 = sig
    elif _is_md5(sig) and _is_md5(md5) and sig.lower() != md5.lower():
        return Rejection(STEP_PACKAGE_REFUSED, "fileMd5 and signature differ", token, version)
    if sha256 is None and not _is_md5(md5):
        return Rejection(STEP_PACKAGE_REFUSED, "missing or bad md5", token, version)
    url = f.get("fileUrl") or f.get("url")
    if not isinstance(url, str) or not url:
        return Rejection(STEP_DOWNLOAD_FAILED, "no file URL", token, version)
    if url.startswith("/") and not http_base:
        return Rejection(STEP_DOWNLOAD_FAILED, "relative URL but no mqtt.http_base", token, version)
    full = _resolve_url(url, http_base)
    if full is None:
        return Rejection(STEP_DOWNLOAD_FAILED, "bad file URL", token, version)
    for c in full:
        if c <= " " or c == "\x7f":
            return Rejection(STEP_DOWNLOAD_FAILED, "bad file URL", token, version)
    scheme = full[:full.find("://")].lower()
    if scheme not in [s.lower() for s in allowed_schemes]:
        return Rejection(STEP_DOWNLOAD_FAILED, "URL scheme %s not allowed" % scheme, token, version)
    name = f.get("name") if isinstance(f.get("name"), str) else None
    return Push(token, version, full, size, md5 and md5.lower(), name, force, method,
                is_diff in (2, "2"), sha256)
