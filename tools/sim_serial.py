"""A simulated board on a serial port: the MicroPython unix port behind a pseudo-terminal.

    python tools/sim_serial.py build/sim-board    # prints the port, e.g. /dev/pts/7
    make deploy PORT=/dev/pts/7                     # (in another shell) the real mpremote path

mpremote talks to a serial device; here that device is one side of a pty whose other side this
supervisor pumps to and from a `micropython` process running in the device root folder (the
board's filesystem root). The unix port's REPL already speaks mpremote's raw REPL and raw-paste
protocol; what it lacks is a *reset*: there Ctrl-D (or any exit) ends the process. The
supervisor supplies what a board's reset does, so the host sees what it would see on a board:

- power-on and friendly soft reset (Ctrl-D at `>>>`): run boot.py, then main.py, then the REPL;
- soft reset from the raw REPL (what mpremote does before its first command): print
  "MPY: soft reboot", run boot.py only (as ports/esp32 does), then re-enter the raw REPL;
- Ctrl-C while boot.py / main.py run: SIGINT through the pty's line discipline, as a terminal
  would, so the unix port raises KeyboardInterrupt;
- a process exit with code 3 (the sim board's `reboot()`) is a hard reset.

Each phase runs in its own micropython process, so a boot is not one interpreter as on the chip;
files, not memory, carry state between them, which is all deploy needs.
"""
import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import threading
import time
import tty

HERE = os.path.dirname(os.path.abspath(__file__))
MICROPYTHON = os.environ.get("MICROPYTHON") or os.path.join(os.path.dirname(sys.executable), "micropython")
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
HARD_RESET_CODE = 3
OUT_CAP = 1 << 20  # bytes held for a host that is not reading (a board's USB buffer is smaller)
CTRL_A, CTRL_B, CTRL_C = 0x01, 0x02, 0x03


def _child_tty(fd):
    """Raw in and out (no echo, no CR/LF rewriting: the REPL writes its own \\r\\n), but ISIG
    kept so Ctrl-C interrupts a running script; the unix REPL switches ISIG off while it reads."""
    attrs = termios.tcgetattr(fd)
    attrs[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INLCR | termios.IGNCR | termios.ISTRIP
                  | termios.IXON | termios.INPCK)
    attrs[1] &= ~termios.OPOST
    attrs[2] = (attrs[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    attrs[3] = (attrs[3] & ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)) | termios.ISIG
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    attrs[6][termios.VINTR] = bytes([CTRL_C])
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _become_session_leader_with_ctty():
    # Runs in the child between fork and exec: make the pty its controlling terminal, so the
    # line discipline's SIGINT reaches it. Only async-signal-safe calls here.
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class SimSerialBoard:
    """`with SimSerialBoard(root) as board: mpremote connect board.port ...`"""

    def __init__(self, root, micropython=MICROPYTHON, env=None, boot_timeout=10.0):
        self.root = os.path.abspath(root)
        self.micropython = micropython
        self.boot_timeout = boot_timeout
        self.env = dict(os.environ)
        # The board's sys.path is ['', '.frozen', '/lib']; the unix port adds '' itself.
        self.env["MICROPYPATH"] = ".frozen:" + os.path.join(self.root, "lib")
        self.env.update(env or {})
        self.boots = 0            # resets so far (power-on counts as one)
        self.output = bytearray()  # everything the host was sent, for tests and debugging
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._proc = None
        self._child_fd = None
        self._phase = None         # "script" or "repl"
        self._queue = []           # argv lists still to run in this boot
        self._raw = False          # host last asked for the raw REPL (Ctrl-A) rather than friendly
        self._entering_raw = False  # swallowing a fresh REPL's banner until its raw prompt
        self._ready = False        # the current process may be given host bytes
        self._seen = bytearray()
        self._pending = bytearray()  # host bytes held while the board is between processes
        self._out = bytearray()      # board bytes the pty has not taken yet

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        self._host_fd, slave = pty.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._host_slave = slave  # kept open: the master never sees a hangup between clients
        os.set_blocking(self._host_fd, False)
        self._reset(raw=False)
        self._thread = threading.Thread(target=self._pump, name="sim-serial", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self._kill_child()
        for fd in (self._host_fd, self._host_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def wait_output(self, needle, timeout=10.0, start=0):
        """Block until `needle` (bytes) has been sent to the host after offset `start`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self.output.find(needle, start) >= 0:
                    return True
            time.sleep(0.02)
        return False

    # -- resets and phases -------------------------------------------------------------------
    def _reset(self, raw):
        self.boots += 1
        self._raw = raw
        self._queue = []
        for name in ("boot.py",) if raw else ("boot.py", "main.py"):
            if os.path.isfile(os.path.join(self.root, name)):
                self._queue.append([self.micropython, name])
        self._queue.append([self.micropython])  # the REPL
        self._next_phase()

    def _next_phase(self):
        argv = self._queue.pop(0)
        self._phase = "repl" if len(argv) == 1 else "script"
        self._entering_raw = self._phase == "repl" and self._raw
        # A script reads its input at once; the unix REPL flushes its input when it sets up the
        # terminal, so host bytes wait for its first prompt.
        self._ready = self._phase == "script"
        self._seen = bytearray()
        master, slave = pty.openpty()
        _child_tty(slave)
        self._proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=self.root,
                                      env=self.env, close_fds=True,
                                      preexec_fn=_become_session_leader_with_ctty)
        os.close(slave)
        os.set_blocking(master, False)
        self._child_fd = master
        self._phase_started = time.monotonic()
        if self._ready:
            self._flush_pending()

    def _child_exited(self, code):
        os.close(self._child_fd)
        self._child_fd = None
        if code == HARD_RESET_CODE:
            self._reset(raw=False)
        elif self._phase == "script" and self._queue:
            self._next_phase()
        else:
            # The REPL ended: on the unix port that is Ctrl-D or sys.exit(); on a board, a soft reset.
            self._send(SOFT_REBOOT)
            self._reset(raw=self._raw)

    def _kill_child(self):
        if self._proc and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self._proc.wait()
        if self._child_fd is not None:
            os.close(self._child_fd)
            self._child_fd = None

    # -- byte pump ---------------------------------------------------------------------------
    def _send(self, data):
        with self._lock:
            self.output += data
        self._out += data
        if len(self._out) > OUT_CAP:  # nobody reading: drop the oldest, as a full USB buffer does
            del self._out[:len(self._out) - OUT_CAP]
        self._drain_out()

    def _drain_out(self):
        while self._out:
            try:
                n = os.write(self._host_fd, self._out)
            except (BlockingIOError, OSError):
                return
            del self._out[:n]

    def _flush_pending(self):
        if self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            self._from_host(data)

    def _from_host(self, data):
        if not self._ready:
            self._pending += data
            return
        if self._phase == "script":
            i = data.find(bytes([CTRL_C]))
            if i >= 0:
                # The interrupted script will not read what follows; the next REPL will.
                self._write_child(data[:i + 1])
                self._ready = False
                self._pending += data[i + 1:]
                return
        else:
            for b in data:
                if b == CTRL_A:
                    self._raw = True
                elif b == CTRL_B:
                    self._raw = False
        self._write_child(data)

    def _write_child(self, data):
        # A script that never reads stdin must not stall the pump: wait a little, then drop.
        view = memoryview(data)
        while view:
            if not select.select([], [self._child_fd], [], 1.0)[1]:
                return
            try:
                n = os.write(self._child_fd, view)
            except (BlockingIOError, OSError):
                return
            view = view[n:]

    def _from_child(self, data):
        if self._ready or self._phase == "script":
            self._send(data)
            return
        self._seen += data
        if self._entering_raw:
            # After a soft reset from the raw REPL the board comes back in the raw REPL.
            if self._seen.endswith(b">>> "):
                self._write_child(bytes([CTRL_A]))
                self._seen = bytearray()
                return
            i = self._seen.find(RAW_PROMPT)
            if i < 0:
                if time.monotonic() - self._phase_started < self.boot_timeout:
                    return
                i = 0  # never got there: show the host what the REPL said instead
            self._entering_raw = False
            data = bytes(self._seen[i:])
        elif not self._seen.endswith(b">>> "):
            self._send(data)
            return
        self._send(data)
        self._ready = True
        self._flush_pending()

    def _pump(self):
        while not self._stop.is_set():
            fds = [self._host_fd] + ([self._child_fd] if self._child_fd is not None else [])
            readable, writable, _ = select.select(fds, [self._host_fd] if self._out else [], [], 0.02)
            if writable:
                self._drain_out()
            if self._child_fd is not None and self._child_fd in readable:
                try:
                    data = os.read(self._child_fd, 4096)
                except OSError:
                    data = b""
                if data:
                    self._from_child(data)
                    continue
            if self._host_fd in readable:
                try:
                    data = os.read(self._host_fd, 4096)
                except OSError:
                    data = b""
                if data:
                    self._from_host(data)
            if self._proc is not None and self._child_fd is not None and self._proc.poll() is not None:
                while True:  # what the process wrote before it exited
                    try:
                        data = os.read(self._child_fd, 4096)
                    except OSError:
                        break
                    if not data:
                        break
                    self._from_child(data)
                self._child_exited(self._proc.returncode)


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="device root folder (the board's filesystem); made on first use")
    args = ap.parse_args(argv)
    if not os.path.exists(os.path.join(args.root, "sim.json")):
        sys.path.insert(0, HERE)
        import mkflash  # a freshly flashed simulated ESP-BOX-3: flash image, efuse, Wi-Fi
        mkflash.make_device_root(args.root)
    # Stop cleanly on SIGINT and SIGTERM, even when started in the background: a shell starts
    # an `&` job with SIGINT ignored, and Python then installs no handler of its own.
    def interrupted(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    board = SimSerialBoard(args.root).start()
    print(board.port, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
