"""Fetch the pinned third-party MicroPython packages listed in lib/lock.json into lib/.

pip cannot install micropython-lib sdists (they have no setup.py), so each package is looked up
on PyPI's Simple API by name, downloaded, checked against its pinned sha256 and only then
unpacked. Nothing is executed from the archive.
"""
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request

from pypi_simple import PyPISimple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "lib")


class FetchError(Exception):
    pass


def find_download_url(name, filename):
    with PyPISimple() as client:
        page = client.get_project_page(name)
    for pkg in page.packages:
        if pkg.filename == filename:
            return pkg.url
    raise FetchError("%s: %s is not on the index" % (name, filename))


def verify(blob, sha256, what):
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256:
        raise FetchError("%s: sha256 %s does not match the pin %s" % (what, got, sha256))


def unpack(blob, modules, dest):
    """Copy only the listed module paths out of the sdist (members are '<dist>/<path>')."""
    wanted = set(modules)
    found = set()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar.getmembers():
            rel = member.name.split("/", 1)[-1]
            if rel in wanted and member.isfile():
                target = os.path.join(dest, *rel.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as out:
                    out.write(tar.extractfile(member).read())
                found.add(rel)
    missing = wanted - found
    if missing:
        raise FetchError("archive lacks %s" % ", ".join(sorted(missing)))


def fetch(pkg, dest=LIB, download=None):
    what = "%s==%s" % (pkg["name"], pkg["version"])
    if download is None:
        url = find_download_url(pkg["name"], pkg["filename"])
        with urllib.request.urlopen(url, timeout=60) as resp:
            blob = resp.read()
    else:
        blob = download(pkg)
    verify(blob, pkg["sha256"], what)
    unpack(blob, pkg["modules"], dest)
    return what


def main():
    with open(os.path.join(LIB, "lock.json")) as f:
        lock = json.load(f)
    try:
        for pkg in lock["packages"]:
            print("fetched", fetch(pkg))
    except FetchError as e:
        print("fetch_deps: " + str(e), file=sys.stderr)
        return 1
    with open(os.path.join(LIB, ".stamp"), "w") as f:
        f.write("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
