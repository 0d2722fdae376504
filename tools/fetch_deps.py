"""Fetch the pinned third-party MicroPython packages listed in lib/lock.json into lib/.

pip cannot install micropython-lib sdists (they have no setup.py), so each package is looked up
on PyPI's Simple API by name, downloaded, checked against its pinned sha256 and only then
unpacked. Nothing is executed from the archive.

lock.json's "frozen_umqtt" are the umqtt.simple versions MicroPython releases freeze into the
esp32 firmware (what a board really imports). They are not on PyPI: with MICROPYTHON_LIB set to
a micropython-lib git checkout (work tree or .git dir), each pinned file is read at its release
tag with `git show`, checked against its sha256, and written to build/frozen-umqtt/<version>/.
Without MICROPYTHON_LIB they are skipped (the tests that need them say so).
"""
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request

from pypi_simple import PyPISimple

import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "lib")
FROZEN_UMQTT = os.path.join(ROOT, "build", "frozen-umqtt")


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


def fetch_frozen(pkg, repo, dest=FROZEN_UMQTT):
    """One pinned umqtt/simple.py out of a micropython-lib checkout, verified, into dest."""
    what = "umqtt.simple==%s (micropython-lib %s)" % (pkg["version"], pkg["tag"])
    p = subprocess.run(["git", "-C", repo, "show", "%s:%s" % (pkg["tag"], pkg["path"])],
                       capture_output=True)
    if p.returncode != 0:
        raise FetchError("%s: git show failed: %s" % (what, p.stderr.decode(errors="replace").strip()))
    verify(p.stdout, pkg["sha256"], what)
    target = os.path.join(dest, pkg["version"], "umqtt", "simple.py")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as out:
        out.write(p.stdout)
    return what


def main():
    with open(os.path.join(LIB, "lock.json")) as f:
        lock = json.load(f)
    try:
        for pkg in lock["packages"]:
            print("fetched", fetch(pkg))
        repo = os.environ.get("MICROPYTHON_LIB")
        for pkg in lock.get("frozen_umqtt", {}).get("packages", []):
            if repo:
                print("fetched", fetch_frozen(pkg, repo))
            else:
                print("skipped umqtt.simple==%s (frozen in MicroPython %s): set MICROPYTHON_LIB "
                      "to a micropython-lib checkout" % (pkg["version"], pkg["tag"]))
    except FetchError as e:
        print("fetch_deps: " + str(e), file=sys.stderr)
        return 1
    with open(os.path.join(LIB, ".stamp"), "w") as f:
        f.write("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
