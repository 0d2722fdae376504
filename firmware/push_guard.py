# Admission rules for upgrade pushes that need memory across reboots (ithings_push.parse_push
# checks the message itself). The failure they prevent: a broker keeps a retained push and hands
# it over again after every power cycle; a stale retained 1.2.0 would re-install over the 1.3.0
# pushed after it, under its old token, at every boot.
# - Handled tokens: a small ring in settings (RING tokens, oldest first), written only when a
#   new token is handled; a re-delivered push is ignored.
# - Downgrades: a push older than the running version is refused (-4) unless the push says
#   force / isForce or config.json says mqtt.allow_downgrade: true. A retained push is suspect
#   (the broker stored it, maybe long ago): its force is not enough, only the config's.
# - Refused images (refused_offers.py): the same image that was refused is not fetched again
#   until its wait is over, unless forced.
# No umqtt.simple (lib's 1.3.4, the frozen 1.4.0-1.7.0) hands the retain flag to its callback;
# mqtt_session reads it from the PUBLISH fixed header as the socket delivers it (MQTT 3.1.1
# section 3.3.1.3: bit 0).
from firmware import ithings, ithings_push, log, refused_offers, version as _version

_log = log.get("mqtt")

K_SEEN = "mqtt_ota_seen"   # [token, ...]: pushes handled, newest last
RING = 8


class Tokens:
    """Push tokens handled, this boot and before it (the ring in settings)."""

    def __init__(self, settings, also=None):
        self.settings = settings
        ring = settings.get(K_SEEN)
        self.ring = [t for t in ring if isinstance(t, str)][-RING:] if isinstance(ring, list) else []
        self.extra = [also] if also and also not in self.ring else []

    def __contains__(self, token):
        return token in self.ring or token in self.extra

    def add(self, token):
        if token is None or token in self.ring:
            return
        self.ring.append(token)
        del self.ring[:-RING]
        try:
            self.settings.set(K_SEEN, list(self.ring))
        except OSError as e:
            _log.error("could not store %s: %s", K_SEEN, e)


def check(push, running, retained, allow_downgrade, board):
    """None when the admitted `push` may install, else the Rejection to report."""
    v = push.version
    try:
        older = _version.compare(v, running) < 0
    except ValueError:
        older = False  # parse_push accepted it; the updater checks the image's own version
    if older:
        if retained and not allow_downgrade:
            return ithings_push.Rejection(ithings.STEP_PACKAGE_REFUSED, "retained push for %s "
                                          "is older than running %s" % (v, running), push.token, v)
        if not (push.force or allow_downgrade):
            return ithings_push.Rejection(ithings.STEP_PACKAGE_REFUSED, "version %s is older "
                                          "than running %s (not forced)" % (v, running),
                                          push.token, v)
    oid = offer_id(push)
    no = refused_offers.blocked(board, oid, push.force and not retained)
    if no:
        return ithings_push.Rejection(no[1], no[0], push.token, v)
    return None


def offer_id(push):
    return refused_offers.offer_id(push.url, push.version, push.size, push.md5,
                                   getattr(push, "sha256", None))
