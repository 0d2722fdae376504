# What every update stage raises: UpdateError with the iThings progress code of its class, and
# Retry for an attempt that a new request may fix (the pipeline counts and backs off).

E_DOWNLOAD = -1   # download / init
E_INTEGRITY = -2  # md5, sha256, size, header
E_FLASH = -3      # flash write, read-back or boot switch
E_VERSION = -4    # version or package type


class UpdateError(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __str__(self):
        return "%s (%d)" % (self.reason, self.code)


class Retry(Exception):
    """An attempt failed in a way a new request may fix (dropped connection, 5xx, timeout)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def short(text, n=60):
    text = str(text)
    return text if len(text) <= n else text[:n] + "..."
