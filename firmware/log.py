# Minimal leveled logger: "LEVEL tag: message" lines on the console.

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_level = 20


def set_level(name):
    global _level
    _level = LEVELS.get(name, 20)


def _emit(level, name, tag, msg, args):
    if level >= _level:
        if args:
            msg = msg % args
        print("%s %s: %s" % (name, tag, msg))


class Logger:
    def __init__(self, tag):
        self.tag = tag

    def debug(self, msg, *args):
        _emit(10, "D", self.tag, msg, args)

    def info(self, msg, *args):
        _emit(20, "I", self.tag, msg, args)

    def warning(self, msg, *args):
        _emit(30, "W", self.tag, msg, args)

    def error(self, msg, *args):
        _emit(40, "E", self.tag, msg, args)


def get(tag):
    return Logger(tag)
