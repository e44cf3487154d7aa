#!/usr/bin/env python3
"""Opens one AMQP 0-9-1 connection and one channel, the way the services do, and closes them.

`rabbitmq-diagnostics ping` only says that the Erlang node answers: a node whose app is stopped,
whose virtual host is down or whose user store is broken passes it and still refuses every
client (CI once saw every end-to-end test fail with "connection reset by peer" behind a passing
ping). This speaks the protocol itself, with nothing but the standard library:
protocol header, Start/StartOk (PLAIN), Tune/TuneOk, Open/OpenOk, Channel.Open/OpenOk, Close.

With --quorum it also declares a durable quorum queue with at-least-once dead-lettering, as every
suite's topology does, which the broker removes 10 s later (`x-expires`). On RabbitMQ 3.10 one dead-letter worker that crashes (its
queue deleted while the worker starts, which the tests' teardown can do) ends the supervisor of
them all, rabbit_fifo_dlx_sup, for good: the node lets clients in, declares plain quorum queues,
and answers every declaration with at-least-once dead-lettering with INTERNAL_ERROR until
`supervisor:restart_child(rabbit_sup, rabbit_fifo_dlx_sup)` or a restart (CI once failed 58
end-to-end tests that way; scripts/rabbitmq-heal.sh heals it).

    scripts/amqp-ping.py [--host 127.0.0.1] [--port 5672] [--user guest] [--password guest]
                         [--vhost /] [--timeout 10] [--quorum]

Exit 0 when the broker opened the channel; 1 with the reason on standard error otherwise.
"""

import argparse
import os
import time
import socket
import struct
import sys

FRAME_METHOD, FRAME_HEARTBEAT, FRAME_END = 1, 8, 0xCE


class Refused(Exception):
    pass


def shortstr(text):
    data = text.encode()
    return struct.pack("!B", len(data)) + data


def longstr(data):
    return struct.pack("!I", len(data)) + data


def table(entries, expires_ms):
    """An AMQP field table of text values, and `x-expires` (a signed 32-bit integer)."""
    body = b"".join(shortstr(key) + b"S" + longstr(value.encode()) for key, value in entries)
    body += shortstr("x-expires") + b"I" + struct.pack("!i", expires_ms)
    return longstr(body)


def method_frame(channel, class_id, method_id, arguments=b""):
    payload = struct.pack("!HH", class_id, method_id) + arguments
    return struct.pack("!BHI", FRAME_METHOD, channel, len(payload)) + payload + bytes([FRAME_END])


def read_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise Refused(f"the broker closed the connection after {len(data)} of {size} bytes")
        data += chunk
    return data


def read_method(sock):
    """The next method frame, as (class, method, arguments); heartbeats are skipped."""
    while True:
        head = read_exact(sock, 7)
        if head.startswith(b"AMQP"):
            raise Refused(f"the broker wants protocol {head[4:] + read_exact(sock, 1)!r}")
        kind, _channel, size = struct.unpack("!BHI", head)
        payload = read_exact(sock, size)
        if read_exact(sock, 1) != bytes([FRAME_END]):
            raise Refused("a frame without its end octet")
        if kind == FRAME_HEARTBEAT:
            continue
        if kind != FRAME_METHOD:
            raise Refused(f"frame type {kind} where a method was expected")
        class_id, method_id = struct.unpack("!HH", payload[:4])
        return class_id, method_id, payload[4:]


def expect(sock, class_id, method_id, step):
    got_class, got_method, arguments = read_method(sock)
    if (got_class, got_method) in ((10, 50), (20, 40)):  # connection.close, channel.close
        code = struct.unpack("!H", arguments[:2])[0]
        text = arguments[3 : 3 + arguments[2]].decode(errors="replace")
        raise Refused(f"{step}: the broker closed with {code} {text}")
    if (got_class, got_method) != (class_id, method_id):
        raise Refused(f"{step}: got method {got_class}.{got_method}, not {class_id}.{method_id}")
    return arguments


def ping(args):
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as sock:
        sock.settimeout(args.timeout)
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        expect(sock, 10, 10, "connection.start")
        response = b"\x00" + args.user.encode() + b"\x00" + args.password.encode()
        start_ok = (
            struct.pack("!I", 0)  # an empty client-properties table
            + shortstr("PLAIN")
            + longstr(response)
            + shortstr("en_US")
        )
        sock.sendall(method_frame(0, 10, 11, start_ok))
        tune = expect(sock, 10, 30, "connection.tune (a refused login closes here)")
        channel_max, frame_max, _heartbeat = struct.unpack("!HIH", tune[:8])
        sock.sendall(method_frame(0, 10, 31, struct.pack("!HIH", channel_max, frame_max, 0)))
        sock.sendall(method_frame(0, 10, 40, shortstr(args.vhost) + shortstr("") + b"\x00"))
        expect(sock, 10, 41, f"connection.open of virtual host {args.vhost!r}")
        sock.sendall(method_frame(1, 20, 10, shortstr("")))
        expect(sock, 20, 11, "channel.open")
        if args.quorum:
            queue = shortstr(f"amqp-ping.{os.getpid()}.{time.time_ns()}")
            durable = b"\x02"
            # Not deleted here: a queue deleted while its dead-letter worker starts is what
            # crashes the worker and ends its supervisor. `x-expires` lets the broker remove it
            # 10 s after its declaration, long after the worker has started.
            arguments = table(
                [
                    ("x-queue-type", "quorum"),
                    ("x-dead-letter-exchange", "amqp-ping.dlx"),
                    ("x-dead-letter-strategy", "at-least-once"),
                    ("x-overflow", "reject-publish"),
                ],
                expires_ms=10_000,
            )
            declare = struct.pack("!H", 0) + queue + durable + arguments
            sock.sendall(method_frame(1, 50, 10, declare))
            expect(sock, 50, 11, "queue.declare of a quorum queue")
        sock.sendall(method_frame(0, 10, 50, struct.pack("!H", 200) + shortstr("ping") + b"\x00" * 4))
        expect(sock, 10, 51, "connection.close")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--user", default="guest")
    parser.add_argument("--password", default="guest")
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--quorum", action="store_true", help="also declare and delete a quorum queue")
    args = parser.parse_args()
    try:
        ping(args)
    except (OSError, Refused, struct.error) as error:
        print(f"amqp-ping {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
