#!/usr/bin/env python3
"""The embedded MQTT broker for development and tests: amqtt, able to carry iThings topics.

    python tools/mqtt_broker.py [--host 127.0.0.1] [--port 1883] [--cert PEM --key PEM --tls-port 8883]

amqtt (since 0.11.2, Yakifo/amqtt#245) closes the connection of any client that publishes to a
topic starting with "$", reading MQTT-4.7.2-1 ("SHOULD prevent ... exchanging messages") as a
hard rule. Every iThings topic starts with "$" ("$ota/...", "$thing/..."), and brokers used with
the platform (EMQX, mosquitto) carry them. This launcher relaxes only that check: "$SYS/..."
publishes are still refused, and "+"/"#" filters still never match "$" topics. Nothing of
amqtt is copied or edited; one method is wrapped.

Prints "mqtt_broker listening on HOST:PORT" once it accepts connections.
"""
import argparse
import asyncio
import logging
import sys

from amqtt.broker import Broker


class _AppTopic(str):
    """A "$..." application topic that passes amqtt's leading-"$" publish check."""

    def startswith(self, prefix, *args):
        if prefix == "$" and not args:
            return str.startswith(self, "$SYS")
        return str.startswith(self, prefix, *args)


def _plain(topic):
    return str.__str__(topic) if isinstance(topic, _AppTopic) else topic


class IThingsBroker(Broker):
    async def _handle_message_delivery(self, client_session, handler, wait_deliver):
        msg = wait_deliver.result()
        topic = getattr(msg, "topic", None)
        if isinstance(topic, str) and topic.startswith("$") and not topic.startswith("$SYS"):
            msg.topic = _AppTopic(topic)
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)

    async def _broadcast_message(self, session, topic, data, force_qos=None):
        return await super()._broadcast_message(session, _plain(topic), data, force_qos)

    async def retain_message(self, source_session, topic_name, data, qos=None):
        return await super().retain_message(source_session, _plain(topic_name), data, qos)


def config(host="127.0.0.1", port=1883, cert=None, key=None, tls_port=8883):
    listeners = {"default": {"type": "tcp", "bind": "%s:%d" % (host, port)}}
    if cert:
        listeners["tls"] = {"type": "tcp", "bind": "%s:%d" % (host, tls_port), "ssl": True,
                            "certfile": cert, "keyfile": key}
    return {
        "listeners": listeners,
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def serve(cfg, ready=None):
    broker = IThingsBroker(cfg)
    await broker.start()
    if ready:
        ready(broker)
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--cert", help="PEM certificate chain: also listen with TLS on --tls-port")
    ap.add_argument("--key", help="PEM private key for --cert")
    ap.add_argument("--tls-port", type=int, default=8883)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    cfg = config(args.host, args.port, args.cert, args.key, args.tls_port)

    def ready(_):
        print("mqtt_broker listening on %s:%d%s" % (args.host, args.port,
              " (TLS on %d)" % args.tls_port if args.cert else ""), flush=True)
    try:
        asyncio.run(serve(cfg, ready))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
