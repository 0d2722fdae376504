# XOR of the 32-bit words buf[4*start : 4*end]: the inner loop of the ESP app image checksum
# (the simulated bootloader and set_boot verify every image they touch). Native (viper): a
# bytecode loop over 4 MiB takes seconds. Where the port has no native emitter, importing this
# module fails and image_scan XORs big ints instead.
import micropython


@micropython.viper
def xor_words(buf, start: int, end: int) -> int:
    p = ptr32(buf)  # noqa: F821 -- a viper builtin
    a = 0
    i = start
    while i < end:
        a ^= p[i]
        i += 1
    return a


@micropython.viper
def xor_fold(buf, start: int, end: int) -> int:
    """The XOR of the bytes buf[4*start : 4*end], as one byte: folded here, so the result is a
    small int (a 32-bit word would be a heap-allocated big int on a 32-bit port)."""
    p = ptr32(buf)  # noqa: F821
    a = 0
    i = start
    while i < end:
        a ^= p[i]
        i += 1
    a ^= a >> 16  # arithmetic shift: the low byte is right whatever the sign bit
    a ^= a >> 8
    return a & 0xFF
