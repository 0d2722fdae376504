# URLs for the device's HTTP client: split an http(s) URL into what the request line needs,
# and resolve a redirect's Location against the URL asked (RFC 3986 section 5.2, the parts a
# Location header uses). What this client will never fetch raises Permanent.
from firmware.http_errors import Permanent


def parse_url(url):
    """Split an http(s) URL into (scheme, host, port, path_with_query); path and query verbatim."""
    i = url.find("://")
    if i <= 0:
        raise Permanent("bad URL")
    scheme = url[:i].lower()
    if scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    else:
        raise Permanent("unsupported URL scheme")
    rest = url[i + 3:]
    h = rest.find("#")
    if h >= 0:  # a fragment is never sent
        rest = rest[:h]
    end = len(rest)
    for c in "/?":
        j = rest.find(c)
        if 0 <= j < end:
            end = j
    netloc = rest[:end]
    path = rest[end:]
    if not path or path[0] == "?":
        path = "/" + path
    for c in path:
        if c <= " " or c == "\x7f":  # would break the request line; not re-encoded on purpose
            raise Permanent("bad URL")
    if "@" in netloc:
        raise Permanent("credentials in URL not supported")
    if netloc.startswith("["):  # IPv6 literal
        j = netloc.find("]")
        if j < 0:
            raise Permanent("bad URL")
        host = netloc[1:j]
        tail = netloc[j + 1:]
    else:
        j = netloc.rfind(":")
        host = netloc if j < 0 else netloc[:j]
        tail = "" if j < 0 else netloc[j:]
    if tail:
        if tail[0] != ":" or not tail[1:].isdigit():
            raise Permanent("bad URL port")
        port = int(tail[1:])
        if not 0 < port < 65536:
            raise Permanent("bad URL port")
    if not host:
        raise Permanent("bad URL host")
    return scheme, host, port, path


def origin(url):
    """scheme://host[:port] of an absolute URL, as it was written."""
    i = url.find("://")
    j = len(url)
    for c in "/?#":
        k = url.find(c, i + 3)
        if 0 <= k < j:
            j = k
    return url[:j]


def _remove_dots(path):
    out = []
    segs = path.split("/")
    for s in segs:
        if s == ".":
            continue
        if s == "..":
            if len(out) > 1:
                out.pop()
            continue
        out.append(s)
    if segs[-1] in (".", ".."):
        out.append("")
    r = "/".join(out)
    return r if r.startswith("/") else "/" + r


def resolve(base, location):
    """The absolute URL a Location header points to, relative to `base`."""
    loc = location.strip()
    h = loc.find("#")
    if h >= 0:
        loc = loc[:h]
    i = loc.find("://")
    if i > 0 and loc[:i].isalpha():
        return loc
    if loc.startswith("//"):
        return base[:base.find("://") + 1] + loc
    base_origin = origin(base)
    if loc.startswith("/"):
        return base_origin + loc
    path = parse_url(base)[3]
    q = path.find("?")
    if q >= 0:
        path = path[:q]
    if loc.startswith("?") or not loc:
        return base_origin + path + loc
    q = loc.find("?")
    rel, query = (loc, "") if q < 0 else (loc[:q], loc[q:])
    return base_origin + _remove_dots(path[:path.rfind("/") + 1] + rel) + query
