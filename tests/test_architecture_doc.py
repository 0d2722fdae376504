"""docs/ARCHITECTURE.md's module table names every device module, and only modules that exist."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table_names():
    # the "## Modules" table; a name may carry its folder (`display/screens.py`)
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")) as f:
        table = f.read().split("## Modules", 1)[1].split("\n## ", 1)[0]
    return set(os.path.basename(n) for n in re.findall(r"`([a-z0-9_/]+\.py)`", table))


def _modules():
    out = set()
    for d, _, files in os.walk(os.path.join(ROOT, "firmware")):
        for n in files:
            if n.endswith(".py") and n != "__init__.py":
                out.add(n)
    return out


def test_every_firmware_module_is_in_the_module_map():
    missing = sorted(_modules() - _table_names())
    assert not missing, "docs/ARCHITECTURE.md does not name: %s" % ", ".join(missing)


def test_the_module_map_names_no_module_that_is_gone():
    gone = sorted(_table_names() - _modules() - {"main.py", "boot.py"})
    assert not gone, "docs/ARCHITECTURE.md names missing files: %s" % ", ".join(gone)
