"""``lamina --host URL COMMAND`` (or ``$LAMINA_HOST``): the CLI as a thin client of a ``lamina
daemon`` over the same Engine API the docker CLI speaks, instead of opening the store in this
process. Commands: images, ps, pull, tag, rmi, create, run, start, stop, kill, pause, unpause,
rm, logs, inspect. Output and exit codes are the local commands' (one ``lamina: ...`` line on
stderr for an error: 2 for not found, 4 for a conflict, 5 for bad input, 1 otherwise; ``run``
and ``start -a`` exit with the container's code).

Only the standard library is imported (http.client, json, socket): no ``graph``, no
``runtime``, so a remote command starts in the time of the interpreter and argparse.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import struct
import sys
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

API = "/v1.45"
EXIT_FOR_STATUS = {400: 5, 404: 2, 409: 4}


class RemoteError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.unix_path)
        except OSError as e:
            s.close()
            raise RemoteError(f"cannot reach the daemon at unix://{self.unix_path}: {e.strerror or e}") from None
        self.sock = s


class Client:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("unix://"):
            self.unix = url[len("unix://"):]
            self.tcp: tuple[str, int] | None = None
        elif url.startswith("tcp://") or url.startswith("http://"):
            u = urlsplit(url)
            self.unix = ""
            self.tcp = (u.hostname or "127.0.0.1", u.port or 2375)
        else:
            raise RemoteError(f"invalid --host {url!r}: want unix:///PATH or tcp://HOST:PORT", 5)

    def conn(self) -> http.client.HTTPConnection:
        if self.tcp is None:
            return _UnixConnection(self.unix)
        return http.client.HTTPConnection(*self.tcp)

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        q = {k: v for k, v in (query or {}).items() if v is not None}
        target = API + path + ("?" + urlencode(q, doseq=True) if q else "")
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        c = self.conn()
        try:
            c.request(method, target, body=data, headers=hdrs)
            r = c.getresponse()
        except OSError as e:
            c.close()
            raise RemoteError(f"cannot reach the daemon at {self.url}: {e.strerror or e}") from None
        if r.status >= 400:
            raw = r.read()
            c.close()
            try:
                msg = json.loads(raw)["message"]
            except (ValueError, KeyError, TypeError):
                msg = raw.decode(errors="replace").strip() or f"HTTP {r.status}"
            raise RemoteError(" ".join(str(msg).split()), EXIT_FOR_STATUS.get(r.status, 1))
        return c, r

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        c, r = self.request(method, path, body, query)
        try:
            raw = r.read()
        finally:
            c.close()
        return json.loads(raw) if raw.strip() and r.getheader("Content-Type", "").startswith("application/json") else None

    def hijack(self, path: str, **query: Any) -> socket.socket:
        """POST with ``Upgrade: tcp``; the raw connection after the 101 (frames follow)."""
        q = {k: v for k, v in query.items() if v is not None}
        target = API + path + ("?" + urlencode(q) if q else "")
        if self.tcp is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.unix)
        else:
            s = socket.create_connection(self.tcp)
        s.sendall(f"POST {target} HTTP/1.1\r\nHost: lamina\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                  "Content-Length: 0\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise RemoteError("the daemon closed the connection")
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if not line.startswith("HTTP/1.1 101") and not line.startswith("HTTP/1.1 200"):
            body = head.split(b"\r\n\r\n", 1)[1]
            raise RemoteError(_message(body) or line, EXIT_FOR_STATUS.get(int(line.split()[1]), 1))
        rest = head.split(b"\r\n\r\n", 1)[1]
        return _Prefixed(s, rest)  # type: ignore[return-value]


class _Prefixed:
    """A socket whose first bytes were already read with the headers."""

    def __init__(self, s: socket.socket, first: bytes) -> None:
        self.s = s
        self.first = first

    def recv(self, n: int) -> bytes:
        if self.first:
            b, self.first = self.first[:n], self.first[n:]
            return b
        return self.s.recv(n)

    def close(self) -> None:
        self.s.close()


def _message(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["message"])
    except (ValueError, KeyError, TypeError):
        return ""


def _frames(read: Any, out: Any, err: Any) -> None:
    """Copy Docker's multiplexed stream (from ``read(n)``) to out and err until it ends."""
    buf = b""
    while True:
        chunk = read(65536)
        if not chunk:
            return
        buf += chunk
        while len(buf) >= 8:
            kind, size = struct.unpack(">BxxxI", buf[:8])
            if len(buf) < 8 + size:
                break
            data, buf = buf[8:8 + size], buf[8 + size:]
            target = err if kind == 2 else out
            target.write(data)
            target.flush()


# ---- commands -------------------------------------------------------------------------------------
def _images(c: Client, args: argparse.Namespace) -> int:
    from lamina.cli import output
    from lamina.cli.images import HEADERS

    got = c.call("GET", "/images/json", all=int(bool(getattr(args, "all", False))))
    rows = []
    for img in got:
        tags = img.get("RepoTags") or ["<none>:<none>"]
        for t in tags:
            repo, _, tag = t.rpartition(":")
            rows.append({"ID": img["Id"], "Repository": repo, "Tag": tag, "Created": img["Created"], "Size": img["Size"]})
    if args.quiet:
        output.print_ids((r["ID"] for r in rows), args.no_trunc)
        return 0
    if args.format == "json":
        output.print_json([{**r, "Created": output.rfc3339(r["Created"])} for r in rows])
        return 0
    output.table(HEADERS, ((r["Repository"], r["Tag"], r["ID"] if args.no_trunc else output.short_id(r["ID"]),
                            output.ago(r["Created"]), output.human_size(r["Size"])) for r in rows))
    return 0


def _ps(c: Client, args: argparse.Namespace) -> int:
    from lamina.cli import output
    from lamina.cli.ps import HEADERS

    got = c.call("GET", "/containers/json", all=int(bool(args.all)))
    if args.quiet:
        for x in got:
            print(x["Id"] if args.no_trunc else output.short_id(x["Id"]))
        return 0
    if args.format == "json":
        output.print_json([{"ID": x["Id"], "Name": x["Names"][0].lstrip("/"), "Image": x["Image"],
                            "ImageID": x["ImageID"], "Command": x["Command"], "Created": output.rfc3339(x["Created"]),
                            "State": x["State"], "Status": x["Status"]} for x in got])
        return 0
    output.table(HEADERS, ((x["Id"] if args.no_trunc else output.short_id(x["Id"]), x["Image"],
                            '"' + (x["Command"] if args.no_trunc else output.ellipsis(x["Command"], 20)) + '"',
                            output.ago(x["Created"]), x["Status"], x["Names"][0].lstrip("/")) for x in got))
    return 0


def _pull(c: Client, args: argparse.Namespace) -> int:
    conn, r = c.request("POST", "/images/create", query={"fromImage": args.ref})
    last = ""
    try:
        for line in r:
            if not line.strip():
                continue
            msg = json.loads(line)
            if "error" in msg:
                raise RemoteError(" ".join(str(msg["error"]).split()))
            text = msg.get("status", "")
            if msg.get("id"):
                text = f"{msg['id']}: {text}"
            if text and text != last and not args.quiet:
                print(text, flush=True)  # one line per state change, as the local pull on a pipe
            last = text
    finally:
        conn.close()
    if args.quiet:
        print(args.ref)
    return 0


def _tag(c: Client, args: argparse.Namespace) -> int:
    repo, _, tag = args.target.rpartition(":")
    if not repo or "/" in tag:
        repo, tag = args.target, "latest"
    c.call("POST", f"/images/{quote(args.source, safe='/:@')}/tag", repo=repo, tag=tag)
    return 0


def _rmi(c: Client, args: argparse.Namespace) -> int:
    for name in args.images:
        for item in c.call("DELETE", f"/images/{quote(name, safe='/:@')}", force=int(args.force)) or []:
            for k, v in item.items():
                print(f"{k}: {v}")
    return 0


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    hc: dict[str, Any] = {"NetworkMode": args.network}
    if args.memory is not None:
        from lamina.containerconfig import parse_memory

        hc["Memory"] = parse_memory(args.memory)
    if args.cpus is not None:
        from lamina.containerconfig import parse_cpus

        hc["NanoCpus"] = parse_cpus(args.cpus)
    if args.pids_limit is not None:
        hc["PidsLimit"] = args.pids_limit
    if getattr(args, "runtime", None):
        hc["Runtime"] = args.runtime
    if getattr(args, "rm", False):
        hc["AutoRemove"] = True
    from lamina import config

    env = []
    for e in args.env:  # -e NAME copies NAME from this environment, as the local create does
        v = None if "=" in e else config.client_env(e)
        if "=" in e or v is not None:
            env.append(e if "=" in e else f"{e}={v}")
    body: dict[str, Any] = {"Image": args.image, "Cmd": list(args.command) or None, "Env": env,
                            "WorkingDir": args.workdir, "User": args.user, "Hostname": args.hostname,
                            "HostConfig": hc}
    if args.entrypoint is not None:
        body["Entrypoint"] = [args.entrypoint] if args.entrypoint else []
    from lamina import runopts  # issue 17's flags (volumes, restart, security, health): HostConfig as the local create

    runopts.apply(args, body)
    return body


def _create(c: Client, args: argparse.Namespace) -> int:
    got = c.call("POST", "/containers/create", _create_body(args), name=args.name)
    print(got["Id"])
    return 0


def _run(c: Client, args: argparse.Namespace) -> int:
    if args.tty:
        raise RemoteError("-t is not supported through --host yet (the docker CLI gives a terminal through the daemon)", 7)
    if args.interactive:
        raise RemoteError("-i is not supported through --host yet", 7)
    got = c.call("POST", "/containers/create", _create_body(args), name=args.name)
    cid = got["Id"]
    if args.detach:
        c.call("POST", f"/containers/{cid}/start")
        print(cid)
        return 0
    return _attached(c, cid, "removed" if args.rm else "next-exit")


def _attached(c: Client, cid: str, condition: str) -> int:
    sock = c.hijack(f"/containers/{cid}/attach", stream=1, stdout=1, stderr=1)
    wconn, wresp = c.request("POST", f"/containers/{cid}/wait", query={"condition": condition})
    try:
        c.call("POST", f"/containers/{cid}/start")
        _frames(sock.recv, sys.stdout.buffer, sys.stderr.buffer)
        doc = json.loads(wresp.read() or b"{}")
    finally:
        sock.close()
        wconn.close()
    return int(doc.get("StatusCode", 255))


def _each(path: str, **query: Any) -> Any:
    def run(c: Client, args: argparse.Namespace) -> int:
        for name in args.containers:
            c.call("POST" if path != "" else "DELETE", f"/containers/{quote(name)}{path}", **{
                k: (v(args) if callable(v) else v) for k, v in query.items()})
            print(name)
        return 0

    return run


def _start(c: Client, args: argparse.Namespace) -> int:
    if args.attach:
        if len(args.containers) != 1:
            raise RemoteError("start -a takes one container", 5)
        return _attached(c, args.containers[0], "next-exit")
    return _each("/start")(c, args)


def _logs(c: Client, args: argparse.Namespace) -> int:
    conn, r = c.request("GET", f"/containers/{quote(args.container)}/logs",
                        query={"stdout": 1, "stderr": 1, "follow": int(args.follow), "tail": args.tail,
                               "timestamps": int(args.timestamps)})
    read = r.read1 if hasattr(r, "read1") else r.read
    try:
        if (r.getheader("Content-Type") or "").startswith("application/vnd.docker.raw-stream"):
            while chunk := read(65536):  # a terminal container's log: one stream, as it is
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        else:
            _frames(read, sys.stdout.buffer, sys.stderr.buffer)
    finally:
        conn.close()
    return 0


def _inspect(c: Client, args: argparse.Namespace) -> int:
    from lamina.cli import output

    found = []
    for name in args.names:
        if args.type in (None, "container"):
            try:
                found.append(c.call("GET", f"/containers/{quote(name)}/json", size=int(args.size)))
                continue
            except RemoteError as e:
                if e.exit_code != 2 or args.type == "container":
                    raise
        try:
            found.append(c.call("GET", f"/images/{quote(name, safe='/:@')}/json"))
        except RemoteError as e:
            if e.exit_code == 2 and args.type is None:
                raise RemoteError(f"no such object: {name}", 2) from None
            raise
    output.print_json(found, indent=4)
    return 0


HANDLERS = {
    "images": _images, "ps": _ps, "pull": _pull, "tag": _tag, "rmi": _rmi, "create": _create, "run": _run,
    "start": _start, "stop": _each("/stop", t=lambda a: int(a.time)), "kill": _each("/kill", signal=lambda a: a.signal),
    "pause": _each("/pause"), "unpause": _each("/unpause"), "rm": _each("", force=lambda a: int(a.force)),
    "logs": _logs, "inspect": _inspect,
}


def dispatch(args: argparse.Namespace) -> int:
    """Run the command against the daemon at ``args.host``; the exit code."""
    handler = HANDLERS.get(args.subcommand)
    try:
        if handler is None:
            raise RemoteError(f"{args.subcommand} is not available through a daemon (--host); run it without --host", 7)
        rc = handler(Client(args.host), args)
        sys.stdout.flush()
        return int(rc or 0)
    except RemoteError as e:
        sys.stdout.flush()
        print(f"lamina: {e}", file=sys.stderr)
        return e.exit_code
