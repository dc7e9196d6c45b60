#!/usr/bin/env python3
"""Sends one NATS request and prints the reply's payload (no `nats` CLI in any registry here).

    scripts/nats-request.py nats://[user:password@]host:port SUBJECT [PAYLOAD]

Speaks the plain NATS client protocol (CONNECT, SUB, PUB, MSG) over one TCP connection,
so it needs nothing but Python. scripts/cluster.sh uses it for the JetStream API
(`$JS.API.STREAM.INFO.<name>`, `$JS.API.STREAM.CREATE.<name>`). Exit 1, with the reason on
stderr, when the server refuses or does not answer within 5 s.
"""

import json
import socket
import sys
from urllib.parse import unquote, urlsplit

TIMEOUT = 5.0


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    url, subject = urlsplit(sys.argv[1]), sys.argv[2]
    payload = (sys.argv[3] if len(sys.argv) == 4 else "").encode()
    connect = {"verbose": False, "pedantic": False, "headers": False, "protocol": 1,
               "name": "nats-request.py"}
    if url.username:
        connect["user"] = unquote(url.username)
        connect["pass"] = unquote(url.password or "")
    inbox = "_INBOX.nats_request_py"
    with socket.create_connection((url.hostname, url.port or 4222), timeout=TIMEOUT) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # INFO
        sock.sendall(f"CONNECT {json.dumps(connect)}\r\nSUB {inbox} 1\r\n".encode()
                     + f"PUB {subject} {inbox} {len(payload)}\r\n".encode() + payload
                     + b"\r\nPING\r\n")
        while True:
            line = reader.readline()
            if not line:
                print("nats-request: the server closed the connection", file=sys.stderr)
                return 1
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                print(f"nats-request: {line.decode().strip()}", file=sys.stderr)
                return 1
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                body = reader.read(size + 2)[:size]
                sys.stdout.write(body.decode() + "\n")
                return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:
        print(f"nats-request: {sys.argv[1].split('@')[-1]}: {e}", file=sys.stderr)
        sys.exit(1)
