"""docs/ARCHITECTURE.md's module table names every device module, and only modules that exist."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table_names():
    # the "## Modules" table; names are paths under firmware/ (`display/screens.py`)
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")) as f:
        table = f.read().split("## Modules", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([a-z0-9_/]+\.py)`", table))


def _modules():
    top = os.path.join(ROOT, "firmware")
    out = set()
    for d, _, files in os.walk(top):
        for n in files:
            if n.endswith(".py") and n != "__init__.py":
                out.add(os.path.relpath(os.path.join(d, n), top).replace(os.sep, "/"))
    return out


def test_every_firmware_module_is_in_the_module_map():
    missing = sorted(_modules() - _table_names())
    assert not missing, "docs/ARCHITECTURE.md does not name: %s" % ", ".join(missing)


def test_the_module_map_names_no_module_that_is_gone():
    gone = sorted(_table_names() - _modules() - {"main.py", "boot.py"})
    assert not gone, "docs/ARCHITECTURE.md names missing files: %s" % ", ".join(gone)
