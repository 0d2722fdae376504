"""Write package.json (the mip package description) from the live firmware/ tree and lib/lock.json.

    python tools/gen_package_json.py            # rewrite package.json
    python tools/gen_package_json.py --check    # exit 1 when package.json is stale

With it, `mpremote mip install github:<org>/<repo>` installs the `firmware` package (into /lib
by default; `--target /` puts it at /firmware as `make deploy` does) and its dependencies from
micropython-lib. URLs are relative, so mip fetches them next to package.json in the same
repository and branch (`github:<org>/<repo>@<branch>`).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE_JSON = os.path.join(ROOT, "package.json")
PYPI_PREFIX = "micropython-"  # micropython-lib packages on PyPI: micropython-<mip name>


def firmware_files(root=ROOT):
    """Every file under firmware/ (as 'firmware/...'), caches and hidden files left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "firmware")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or name.endswith(".pyc"):
                continue
            out.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(out)


def deps(root=ROOT):
    """mip dependencies from lib/lock.json: [[name, version], ...]."""
    with open(os.path.join(root, "lib", "lock.json")) as f:
        lock = json.load(f)
    out = []
    for pkg in lock["packages"]:
        name = pkg["name"]
        if name.startswith(PYPI_PREFIX):
            name = name[len(PYPI_PREFIX):]
        out.append([name, pkg["version"]])
    return out


def render(root=ROOT):
    """The file text: valid JSON, one entry per line so diffs stay readable."""
    def block(key, rows):
        return '  "%s": [\n%s\n  ]' % (key, ",\n".join("    " + json.dumps(r) for r in rows))
    urls = [[path, path] for path in firmware_files(root)]
    return "{\n%s,\n%s\n}\n" % (block("urls", urls), block("deps", deps(root)))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if argv == ["--check"]:
        try:
            with open(PACKAGE_JSON) as f:
                current = f.read()
        except OSError:
            current = ""
        if current != text:
            print("package.json is stale: run `python tools/gen_package_json.py`", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    with open(PACKAGE_JSON, "w") as f:
        f.write(text)
    doc = json.loads(text)
    print("package.json: %d files, deps %s" % (len(doc["urls"]), doc["deps"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
