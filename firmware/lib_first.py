# Import a pinned lib/ package ahead of a frozen module of the same name.
#
# A board's sys.path is ['', '.frozen', '/lib'] (ports/esp32/main.c:144 appends "/lib" after the
# defaults), and py/builtinimport.c (lines 53-67) searches frozen modules exactly where the
# ".frozen" entry stands. Every MicroPython release freezes its own umqtt.simple into the esp32
# firmware (ports/esp32/boards/manifest.py): 1.4.0 in v1.24, 1.6.0 in v1.25-1.26, 1.7.0 in
# v1.27-1.28. So a plain `import umqtt.simple` on a board never reaches lib/'s pinned 1.3.4.
# load() moves ".frozen" behind the other entries for one import: the deployed /lib copy wins,
# and where there is none (our own build freezes the port's copy, see
# tools/board/ESP_BOX_3_OTA/manifest.py) the frozen one still loads. mqtt_transport.use_tls()
# and connect() make either one check the broker's certificate.
import sys


def load(name):
    """The module `name` ("pkg.mod"), from a sys.path directory before any frozen copy."""
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    path = sys.path
    saved = list(path)
    if ".frozen" in saved:
        path.clear()
        path.extend([p for p in saved if p != ".frozen"])
        path.append(".frozen")
    try:
        __import__(name)
    finally:
        path.clear()
        path.extend(saved)
    return sys.modules[name]
