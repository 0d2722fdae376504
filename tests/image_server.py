"""An HTTP server for update tests: files from memory with Range support, and faults per
request (`plan`, by request index) or for every request (`fault`)."""
import time

from http_fault_server import Reply, start


class ImageServer:
    """Serves files from memory with Range support; faults per request (plan) or for all (fault)."""

    def __init__(self):
        self.files = {}
        self.plan = []
        self.fault = {}
        self.port, self._stop = start(self.handle)
        self.requests = self._stop.requests

    def url(self, path, query="?X-Signature=s3cr3t&Expires=1"):
        return "http://127.0.0.1:%d%s%s" % (self.port, path, query)

    def handle(self, req):
        i = len(self.requests) - 1
        f = self.plan[i] if i < len(self.plan) else self.fault
        body = self.files.get(req.target.split("?")[0])
        if body is None:
            return Reply(404, b"not found")
        if f.get("status"):
            return Reply(f["status"], b"error")
        status, start_at, headers = 200, 0, dict(f.get("headers", {}))
        rng = req.headers.get("range")
        if rng and not f.get("ignore_range"):
            start_at = int(rng.split("=")[1].split("-")[0])
            if start_at >= len(body):
                return Reply(416, b"")
            status = 206
            headers["Content-Range"] = "bytes %d-%d/%d" % (start_at, len(body) - 1, len(body))
        if "pace" in f:           # (bytes, seconds): a slow link, written by hand
            step, pause = f["pace"]
            head = "HTTP/1.1 %d OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
                status, len(body) - start_at)
            req.conn.sendall(head.encode())
            for i in range(start_at, len(body), step):
                req.conn.sendall(body[i:i + step])
                time.sleep(pause)
            return None
        kw = {}
        if "close_at" in f:       # an absolute offset in the file: the connection drops there
            kw["close_after"] = max(0, f["close_at"] - start_at)
        if "stall_at" in f:
            kw["stall_after"] = max(0, f["stall_at"] - start_at)
        return Reply(status, body[start_at:], headers=headers, mode=f.get("mode", "length"), **kw)

    def stop(self):
        self._stop()
