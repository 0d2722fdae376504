# The delta applier's hot loops, and which implementation of them runs.
#
# MODE picks it when an Applier starts: "auto" (machine code from firmware/delta_viper.py when
# the port has the viper emitter, else these plain-Python functions), "viper" (fail without
# the emitter) or "plain". Both implementations keep the same contract, documented here; the
# tests run every patch through both.
#
# st is an array('i') holding the positions, so the calls allocate nothing:
#   add(dst, a, b, st)   dst[d:d+n] = (a[i:i+n] + b[j:j+n]) mod 256, st = [d, i, j, n]
#   copy(dst, a, st)     dst[d:d+n] = a[i:i+n],                      st = [d, i, -, n]
#   fill(dst, st)        dst[d:d+n] = v,                             st = [d, v, -, n]
#   heatshrink(st, inp, out, win): decode inp[ip:iend] into out[op:oend] until the input runs
#       dry or the output is full, st = [ip, iend, op, oend, acc, nbits, phase, head, back,
#       count, window_bits, lookahead_bits]; ip and op advance, the rest is the decoder state.
#
# heatshrink's bit stream (c/heatshrink/heatshrink_decoder.c in eerimoq/detools, the decoder
# esp_delta_ota links): bits are read MSB first; a 1 tag bit is followed by an 8-bit literal, a
# 0 tag bit by a back-reference of window_bits (distance - 1) and lookahead_bits (length - 1).
# The window starts zero-filled (heatshrink_decoder_reset). A field that the remaining input
# cannot complete waits for more input (phase 0 tag, 1 literal, 2 distance, 3 length, 4 copy).
MODE = "auto"


def add(dst, a, b, st):
    d = st[0]
    i = st[1] - d
    j = st[2] - d
    for k in range(d, d + st[3]):
        dst[k] = (a[i + k] + b[j + k]) & 0xFF


def copy(dst, a, st):
    d = st[0]
    i = st[1] - d
    for k in range(d, d + st[3]):
        dst[k] = a[i + k]


def fill(dst, st):
    v = st[1]
    for k in range(st[0], st[0] + st[3]):
        dst[k] = v


def heatshrink(st, inp, out, win):
    ip = st[0]
    iend = st[1]
    op = st[2]
    oend = st[3]
    acc = st[4]
    nb = st[5]
    ph = st[6]
    head = st[7]
    back = st[8]
    cnt = st[9]
    mask = (1 << st[10]) - 1
    while True:
        if ph == 4:
            while cnt and op < oend:
                c = win[(head - back) & mask]
                out[op] = c
                win[head] = c
                head = (head + 1) & mask
                op += 1
                cnt -= 1
            if cnt:
                break
            ph = 0
        if ph == 1 and op >= oend:
            break
        need = 1 if ph == 0 else 8 if ph == 1 else st[10] if ph == 2 else st[11]
        while nb < need and ip < iend:
            acc = (acc << 8) | inp[ip]
            ip += 1
            nb += 8
        if nb < need:
            break
        nb -= need
        v = acc >> nb
        acc &= (1 << nb) - 1
        if ph == 0:
            ph = 1 if v else 2
        elif ph == 1:
            out[op] = v
            win[head] = v
            head = (head + 1) & mask
            op += 1
            ph = 0
        elif ph == 2:
            back = v + 1
            ph = 3
        else:
            cnt = v + 1
            ph = 4
    st[0] = ip
    st[2] = op
    st[4] = acc
    st[5] = nb
    st[6] = ph
    st[7] = head
    st[8] = back
    st[9] = cnt


def kernels(mode=None):
    """(name, add, copy, fill, heatshrink) for `mode` (default: MODE)."""
    mode = mode or MODE
    if mode not in ("auto", "viper", "plain"):
        raise ValueError("delta_ops mode must be auto, viper or plain")
    if mode != "plain":
        try:
            from firmware import delta_viper as v
            return "viper", v.add, v.copy, v.fill, v.heatshrink
        except (ImportError, SyntaxError, ValueError, NotImplementedError):
            if mode == "viper":
                raise
    return "plain", add, copy, fill, heatshrink
