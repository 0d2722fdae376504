# The board interface (see docs/ARCHITECTURE.md): one implementation per platform.
import sys


def load(config):
    """The board this code runs on: the real ESP32-S3, or the simulator on the unix port."""
    if sys.platform == "esp32":
        from firmware.board import esp32s3
        return esp32s3.Board(config)
    from firmware.board import sim
    return sim.Board(config)


def reset():
    """Reset the chip without a board object: the last resort after a fatal start-up error, so
    a new image that cannot even start is rolled back by the bootloader instead of sitting at
    the REPL."""
    if sys.platform == "esp32":
        import machine
        machine.reset()
    from firmware.board import sim
    sys.exit(sim.REBOOT_EXIT_CODE)
