"""`make run`: the simulated ESP-BOX-3 on the MicroPython unix port.

Makes a device root under build/sim (flash, sim.json, config.json) on first use, then boots
main.py there; a device reboot (exit code 3) boots it again, like the chip resetting.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import mkflash  # noqa: E402

REBOOT_EXIT_CODE = 3
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")


def boot_loop(root, max_boots=10):
    env = dict(os.environ, MICROPYPATH=":".join([ROOT, os.path.join(ROOT, "lib"), ".frozen"]))
    for _ in range(max_boots):
        code = subprocess.call([MICROPYTHON, os.path.join(ROOT, "main.py")], cwd=root, env=env)
        if code != REBOOT_EXIT_CODE:
            return code
        print("--- device rebooted ---", flush=True)
    return 0


def main():
    root = os.path.join(ROOT, "build", "sim")
    if not os.path.exists(os.path.join(root, "flash.bin")):
        mkflash.make_device_root(root)
    return boot_loop(root)


if __name__ == "__main__":
    sys.exit(main())
