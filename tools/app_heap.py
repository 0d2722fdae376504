"""The whole app's heap floor on the unix port: main.py's path (boot, OTA check, update, reboot)
against a local OTA server offering 1.1.0, in the smallest heap it succeeds in.

Two ways to count (bench.json app_min_heap_kib, tests/test_heap_floor.py):
- "mpy": `micropython -X heapsize=NK` with firmware/ precompiled (what `deploy --mpy` ships):
  every module's bytecode lives in that heap too;
- "mpy_without_sim": what a board running .mpy files needs: only the simulator's own modules
  (SIM_ONLY: simulated flash, bootloader, panel, watchdog) and the panel's GRAM are loaded first
  and not counted; ballast leaves N KiB free and the app loads its .mpy bytecode into that. The
  firmware modules the simulator pulls in (app_image, image_scan, otadata, ...) are loaded early
  with it, so their measured bytes are added back (the figure is N + those, rounded up);
- "frozen_like": the device modules are imported first and not counted (a frozen build keeps
  bytecode in flash), nor is the simulated LCD's GRAM (panel memory on a board); ballast then
  leaves only N KiB free for everything the app does at run time.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import build_image  # noqa: E402
import mkflash  # noqa: E402
import ota_server  # noqa: E402

MICROPYTHON = os.environ.get("MICROPYTHON") or os.path.join(os.path.dirname(sys.executable), "micropython")
IMAGE_SIZE = 1024 * 1024
# The simulator's own modules: on a board esp32s3.py and the hardware take their place.
SIM_ONLY = ["firmware.board.sim", "firmware.board.sim_partition", "firmware.board.nor_flash",
            "firmware.board.sim_watchdog", "firmware.display.sim_panel", "firmware.display.png"]

# Device-side (MicroPython): leave only free_kib of free heap, in 1 KiB pieces that fill any
# hole, then hand back exactly enough of them; returns (ballast, free heap).
BALLAST = r"""
def leave_free(free_kib):
    import gc
    gc.collect()
    n = (gc.mem_free() - free_kib * 1024) // 1056
    ballast = [None] * max(n, 0)
    for i in range(len(ballast)):
        ballast[i] = bytearray(1024)
    gc.collect()
    while ballast and gc.mem_free() < free_kib * 1024:
        ballast.pop()
        gc.collect()
    return ballast, gc.mem_free()
"""

DRIVER = BALLAST + r"""
import gc, json, os, sys
a = json.loads(os.getenv('APP_HEAP'))
free_before = None
shared = 0
if a['free_kib'] and a['sim_only']:
    # Firmware modules the simulator imports: loaded here, their bytes measured and reported.
    gc.collect()
    before = gc.mem_alloc()
    for name in a['sim_deps']:
        __import__(name)
    gc.collect()
    shared = gc.mem_alloc() - before
if a['free_kib']:
    for name in (a['sim_only'] or a['modules']):
        try:
            __import__(name)
        except Exception:
            pass  # the real board's modules (esp32, machine) do not import here
    from firmware.board import sim
    from firmware.display import sim_panel
    lcd = sim_panel.make_lcd()  # simulated hardware: the panel's own memory
    sim.Board.display = lambda self: lcd
    ballast, free_before = leave_free(a['free_kib'])
from firmware import app
code = 0
try:
    app.main()
except SystemExit as e:
    code = e.args[0] if e.args else 0
print(json.dumps({'exit': code, 'free_before': free_before, 'shared': shared}))
"""


def device_modules(root=ROOT):
    out = []
    for dirpath, dirnames, files in os.walk(os.path.join(root, "firmware")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in sorted(files):
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), root)[:-3]
                mod = rel.replace(os.sep, ".")
                out.append(mod[:-9] if mod.endswith(".__init__") else mod)
    return sorted(out) + ["umqtt.simple"]


def sim_deps(root=ROOT):
    """Firmware (not simulator) modules that the SIM_ONLY modules import at module level, and
    the packages that hold them."""
    deps = set(m.rsplit(".", 1)[0] for m in SIM_ONLY)
    for mod in SIM_ONLY:
        with open(os.path.join(root, *mod.split(".")) + ".py") as f:
            for line in f:
                words = line.split()
                if line.startswith("from firmware") and len(words) >= 4 and words[2] == "import":
                    pkg = words[1]
                    for name in " ".join(words[3:]).split(","):
                        name = name.split()[0]
                        full = pkg + "." + name
                        is_mod = os.path.exists(os.path.join(root, *full.split(".")) + ".py")
                        deps.add(full if is_mod else pkg)
    return sorted(d for d in deps if d not in SIM_ONLY)


class AppHeap:
    def __init__(self, mpy_dir):
        self.mpy_dir = mpy_dir
        self.srv = ota_server.run_in_thread(auto_activate_s=0)
        self.srv.set_offer("esp-box-3", "1.1.0", build_image.build_image("1.1.0", size=IMAGE_SIZE))
        self.modules = device_modules()

    def stop(self):
        self.srv.stop()

    def attempt(self, heapsize_kib=2048, free_kib=None, sim_only=False):
        """One boot that should install 1.1.0 and reboot; (ok, free heap before it or None, log).
        free_kib with sim_only: only the simulator is loaded first (its firmware deps' bytes are
        in self.shared), the app loads its own modules into the free_kib left."""
        with tempfile.TemporaryDirectory(prefix="app-heap-") as root:
            mkflash.make_device_root(root, version="1.0.0", config={
                "ota_url": self.srv.ota_url, "http_timeout_ms": 5000, "offline_s": 0,
                "retry": {"base_s": 0.05, "factor": 2, "max_s": 1, "tries": 2, "jitter": 0}})
            path = ":".join([self.mpy_dir, ROOT, os.path.join(ROOT, "lib")])
            env = dict(os.environ, MICROPYPATH=path, FW_RUN_UNTIL="listen",
                       APP_HEAP=json.dumps({"free_kib": free_kib, "modules": self.modules,
                                                    "sim_only": SIM_ONLY if sim_only else None,
                                                    "sim_deps": sim_deps()}))
            try:
                p = subprocess.run([MICROPYTHON, "-X", "heapsize=%dK" % heapsize_kib, "-c", DRIVER],
                                   cwd=root, env=env, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired as e:  # e.g. a MemoryError each try: the app retries
                return False, None, str(e.stdout or "")[-2000:]
            log = p.stdout + p.stderr
            try:
                res = json.loads(p.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                return False, None, log
            ok = res["exit"] == 3 and "rebooting into it" in log and "MemoryError" not in log
            self.shared = res.get("shared", 0)
            return ok, res["free_before"], log

    def min_heapsize(self, lo=64, hi=1024):
        """Smallest -X heapsize (KiB) in which the app installs the update (None: not even hi)."""
        return smallest(lambda k: self.attempt(heapsize_kib=k)[0], lo, hi)

    def min_free(self, lo=8, hi=512):
        """Frozen-like: smallest free heap (KiB) left after imports that the app needs."""
        return smallest(lambda k: self.attempt(heapsize_kib=4096, free_kib=k)[0], lo, hi)

    def min_free_without_sim(self, lo=64, hi=1024):
        """From .mpy, the simulator not counted: KiB of free heap the app needs, its own module
        bytecode included (plus the bytes of the firmware modules the simulator loaded early)."""
        k = smallest(lambda k: self.attempt(heapsize_kib=4096, free_kib=k, sim_only=True)[0], lo, hi)
        if k is None:
            return None
        self.attempt(heapsize_kib=4096, free_kib=k, sim_only=True)  # self.shared of this run
        return k + (self.shared + 1023) // 1024


def smallest(works, lo, hi):
    """Binary search: the smallest k in (lo, hi] for which works(k) (None: not even hi)."""
    if not works(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if works(mid):
            hi = mid
        else:
            lo = mid
    return hi


if __name__ == "__main__":
    import bench
    d = tempfile.mkdtemp(prefix="app-heap-mpy-")
    bench.compile_mpy(d)
    h = AppHeap(d)
    try:
        print(json.dumps({"mpy": h.min_heapsize(), "mpy_without_sim": h.min_free_without_sim(),
                          "frozen_like": h.min_free()}))
    finally:
        h.stop()
