# Frozen into the ESP-BOX-3 OTA build: everything the official esp32 build freezes, our
# `firmware` package, and the lib/ packages pinned in lib/lock.json (run `make deps` first).
#
# boot.py and main.py are not frozen: they stay small files on the board's filesystem
# (`tools/deploy.py deploy --frozen` copies them with the config), so they can change without a
# rebuild, and an OTA update (which replaces the app image, frozen code included) never leaves
# them pointing at modules that moved.
import json
import os

include("$(PORT_DIR)/boards/manifest.py")

# This file runs with its own folder as the working directory: tools/board/ESP_BOX_3_OTA.
_repo = os.path.abspath(os.path.join("..", "..", ".."))

package("firmware", base_path=_repo)

# The port's manifest already freezes some micropython-lib packages (umqtt.simple among them).
# Freezing a second copy of a module under the same name would clash, so those keep the copy
# that ships with the MicroPython tree; firmware/compat.py makes either version work.
_frozen = set(f.target_path for f in include.__self__.files())
_lib = os.path.join(_repo, "lib")
with open(os.path.join(_lib, "lock.json")) as _f:
    for _pkg in json.load(_f)["packages"]:
        for _mod in _pkg["modules"]:
            if _mod in _frozen:
                continue
            if not os.path.isfile(os.path.join(_lib, _mod)):
                raise Exception("lib/%s missing: run `make deps` before building" % _mod)
            module(_mod, base_path=_lib)
