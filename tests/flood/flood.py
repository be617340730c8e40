#!/usr/bin/env python3
"""Floods the agent's API port as an attacker on the node network would (issue 19), with
Python's own TLS (OpenSSL), never nodeguard's code. Loopback targets only; every mode is
bounded in count or time. Prints one JSON line of what it saw.

  flood.py tokens   HOST PORT --size N --count C [--path P] [--tls]
      C requests, each with a distinct made-up bearer token of N bytes, pipelined one at a
      time over one keep-alive connection (reconnecting when the agent closes it).
  flood.py heads    HOST PORT --addrs A --per-addr K --bytes B --hold S [--tls]
      A source addresses (127.0.0.1 .. 127.0.0.A) x K connections, each sending B bytes of
      a request head it never finishes, held S seconds.
  flood.py denials  HOST PORT --conns K --seconds T [--tls]
      K connections sending requests with made-up tokens as fast as answered, for T seconds.
"""
import argparse, asyncio, json, os, socket, ssl, sys, time

def context(tls):
    if not tls:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx

async def connect(host, port, tls, source=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if source:
        sock.bind((source, 0))
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock, ssl=context(tls),
                                         server_hostname="localhost" if tls else None)

async def read_answer(reader):
    """Status of one answer, its body skipped; None when the connection closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        return None, True
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length, close = 0, False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.lower() == "content-length":
            length = int(v.strip())
        if k.lower() == "connection" and v.strip().lower() == "close":
            close = True
    if length:
        try:
            await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return status, True
    return status, close

def request(path, token, extra=b""):
    return (f"GET {path} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer ".encode()
            + token + b"\r\n" + extra + b"\r\n")

async def tokens(a):
    statuses, conn, connects = {}, None, 0
    for i in range(a.count):
        token = (b"%08d" % i) + os.urandom(a.size).hex().encode()[: max(a.size - 8, 0)]
        for _attempt in range(3):
            if conn is None:
                conn = await connect(a.host, a.port, a.tls)
                connects += 1
            reader, writer = conn
            try:
                writer.write(request(a.path, token))
                await writer.drain()
                status, closed = await read_answer(reader)
            except (ConnectionError, ssl.SSLError):
                status, closed = None, True
            if closed:
                writer.close()
                conn = None
            if status is not None:
                statuses[status] = statuses.get(status, 0) + 1
                break
        else:
            statuses["none"] = statuses.get("none", 0) + 1
    return {"mode": "tokens", "statuses": statuses, "connections": connects}

async def heads(a):
    pad = b"GET /v1/processes HTTP/1.1\r\nHost: agent\r\nX-Pad: " + b"p" * a.bytes
    opened, refused, answered = 0, 0, {}
    async def one(source):
        nonlocal opened, refused
        try:
            reader, writer = await asyncio.wait_for(connect(a.host, a.port, a.tls, source), 20)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            refused += 1
            return
        opened += 1
        try:
            writer.write(pad)
            await asyncio.wait_for(writer.drain(), a.hold)
            status, _ = await asyncio.wait_for(read_answer(reader), a.hold)
            key = status if status is not None else "closed"
        except asyncio.TimeoutError:
            key = "held"
        except (ConnectionError, ssl.SSLError):
            key = "reset"
        answered[key] = answered.get(key, 0) + 1
        writer.close()
    await asyncio.gather(*(one(f"127.0.0.{1 + i % a.addrs}")
                           for i in range(a.addrs * a.per_addr)))
    return {"mode": "heads", "opened": opened, "refused": refused, "outcomes": answered}

async def denials(a):
    deadline = time.monotonic() + a.seconds
    sent = 0
    statuses = {}
    async def one(k):
        nonlocal sent
        conn = None
        while time.monotonic() < deadline:
            if conn is None:
                try:
                    conn = await connect(a.host, a.port, a.tls)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
            reader, writer = conn
            # Pipelined: a batch of requests, then their answers.
            batch = 16
            tokens = [b"made-up-%d-%d" % (k, sent + j) for j in range(batch)]
            try:
                writer.write(b"".join(request("/v1/processes", t) for t in tokens))
                await writer.drain()
                for _ in tokens:
                    status, closed = await read_answer(reader)
                    if status is not None:
                        statuses[status] = statuses.get(status, 0) + 1
                        sent += 1
                    if closed:
                        raise ConnectionError
            except (ConnectionError, ssl.SSLError):
                writer.close()
                conn = None
        if conn:
            conn[1].close()
    await asyncio.gather(*(one(k) for k in range(a.conns)))
    return {"mode": "denials", "requests": sent, "statuses": statuses, "seconds": a.seconds}

def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["tokens", "heads", "denials"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--size", type=int, default=400_000)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--path", default="/v1/processes")
    p.add_argument("--addrs", type=int, default=16)
    p.add_argument("--per-addr", type=int, default=32)
    p.add_argument("--bytes", type=int, default=380_000)
    p.add_argument("--hold", type=float, default=6.0)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    if not a.host.startswith("127."):
        sys.exit("flood.py floods loopback only")
    result = asyncio.run({"tokens": tokens, "heads": heads, "denials": denials}[a.mode](a))
    print(json.dumps(result), flush=True)

if __name__ == "__main__":
    main()
