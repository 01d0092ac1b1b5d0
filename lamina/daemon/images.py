"""Image endpoints: list, inspect, pull (``/images/create``, Docker's JSON progress), tag,
remove, history, push, save (``/images/get``), load, prune."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lamina.daemon import auth, wire
from lamina.daemon.wire import ApiError

if TYPE_CHECKING:
    from graph import Image, Store
    from graph.references import RefRecord
    from graph.distribution.progress import Event
    from lamina.daemon.context import Daemon

# facts of an image that never change (its ID is its config's digest): created, labels, size
_facts: dict[str, tuple[int, dict[str, str], int, str | None]] = {}
_facts_lock = threading.Lock()


def unix_time(rfc: str | None) -> int:
    if not rfc:
        return 0
    s = rfc.strip().replace("Z", "+00:00")
    if "." in s:  # Python wants at most 6 digits of fraction
        head, _, rest = s.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        s = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        return int(datetime.fromisoformat(s).timestamp())
    except ValueError:
        return 0


def _image_facts(store: "Store", img: "Image") -> tuple[int, dict[str, str], int, str | None]:
    key = str(img.id)
    with _facts_lock:
        got = _facts.get(key)
    if got is not None:
        return got
    cfg = store.images.config(img.id)
    size = sum(layer.size for layer in store.layers.stack(img.top_layer)) if img.top_layer else 0
    got = (unix_time(cfg.created), dict((cfg.config or {}).get("Labels") or {}), size, cfg.created)
    with _facts_lock:
        _facts[key] = got
    return got


def _tags_digests(store: "Store", img: "Image", refs: "list[RefRecord] | None" = None) -> tuple[list[str], list[str]]:
    """The image's ``RepoTags`` and ``RepoDigests`` from its references (``refs``: those already
    read, else one query). Each name is parsed once (``RefRecord.reference`` parses per use)."""
    if refs is None:
        refs = store.refs.list(img.id)
    tags: list[str] = []
    digests: set[str] = set()
    for r in refs:
        ref = r.reference
        if ref.digest is None:
            tags.append(ref.familiar())
        else:
            digests.add(f"{ref.familiar_name()}@{ref.digest}")
        if r.manifest:
            digests.add(f"{ref.familiar_name()}@{r.manifest}")
    return tags, sorted(digests)


def _label_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for w in wanted:
        k, eq, v = w.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True


def _ref_match(tags: list[str], patterns: list[str]) -> bool:
    import fnmatch

    for p in patterns:
        for t in tags:
            name = t.rsplit(":", 1)[0] if ":" in t.rsplit("/", 1)[-1] else t
            if fnmatch.fnmatchcase(t, p) or fnmatch.fnmatchcase(name, p):
                return True
    return False


def list_images(store: "Store", *, all_: bool, flt: dict[str, list[str]]) -> list[dict[str, Any]]:
    out = []
    by_image: dict[str, list[RefRecord]] = {}
    for r in store.refs.list():  # one query for every image's names
        by_image.setdefault(str(r.image_id), []).append(r)
    for img in store.images.list():
        created, labels, size, _ = _image_facts(store, img)
        tags, digests = _tags_digests(store, img, by_image.get(str(img.id), []))
        if "dangling" in flt:
            want = flt["dangling"][-1].lower() in ("1", "true")
            if want != (not tags):
                continue
        if "label" in flt and not _label_match(labels, flt["label"]):
            continue
        if "reference" in flt and not _ref_match(tags, flt["reference"]):
            continue
        out.append({
            "Id": str(img.id), "ParentId": "", "RepoTags": tags, "RepoDigests": digests,
            "Created": created, "Size": size, "VirtualSize": size, "SharedSize": -1,
            "Labels": labels or None, "Containers": -1,
        })
    out.sort(key=lambda i: i["Created"], reverse=True)
    return out


async def list_(d: "Daemon", request: web.Request) -> web.StreamResponse:
    flt = wire.filters(request)
    wire.check_filters(flt, {"dangling", "label", "reference", "before", "since", "until"})
    got = await d.call(list_images, all_=wire.qbool(request, "all"), flt=flt)
    return wire.json_response(got)


def inspect_doc(store: "Store", name: str) -> dict[str, Any]:
    doc = store.inspect_image(name)
    img = store.resolve_image(name)
    cfg = store.images.config(img.id)
    raw = json.loads(cfg.raw)
    doc.update({
        "Parent": "", "Comment": (cfg.history[-1].get("comment", "") if cfg.history else ""),
        "Container": "", "ContainerConfig": {}, "DockerVersion": raw.get("docker_version", ""),
        "Author": raw.get("author", ""), "VirtualSize": doc["Size"],
        "Created": doc.get("Created") or "0001-01-01T00:00:00Z",
        "GraphDriver": {"Name": store.driver_name, "Data": None},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    })
    doc["Id"] = str(doc["Id"])
    return doc


async def inspect(d: "Daemon", request: web.Request, name: str) -> web.StreamResponse:
    return wire.json_response(await d.call(inspect_doc, name))


# ---- pull -----------------------------------------------------------------------------------------
_PULL_WORDS = {"waiting": "Waiting", "downloading": "Downloading", "verifying": "Verifying Checksum",
               "extracting": "Extracting", "done": "Pull complete", "exists": "Already exists",
               "retrying": "Retrying", "failed": "Failed"}
_PUSH_WORDS = {"waiting": "Preparing", "pushing": "Pushing", "pushed": "Pushed",
               "exists": "Layer already exists", "mounted": "Mounted from", "retrying": "Retrying",
               "failed": "Failed"}


def progress_message(e: "Event", words: dict[str, str]) -> dict[str, Any]:
    msg: dict[str, Any] = {"status": words.get(e.phase, e.phase), "id": e.short_id, "progressDetail": {}}
    if e.phase == "mounted" and e.detail:
        msg["status"] = f"Mounted from {e.detail}"
    if e.phase in ("downloading", "extracting", "pushing") and e.total:
        msg["progressDetail"] = {"current": e.current, "total": e.total}
        frac = min(1.0, e.current / e.total)
        filled = int(frac * 50)
        msg["progress"] = "[" + "=" * max(0, filled - 1) + (">" if filled else "") + " " * (50 - filled) + "]"
    return msg


class _Progress:
    """Messages from a worker thread to the handler's loop, in order; ``None`` ends them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.seen_download: set[str] = set()

    def put(self, msg: dict[str, Any] | None) -> None:
        self.loop.call_soon_threadsafe(self.q.put_nowait, msg)


async def _pump(request: web.Request, fut: "asyncio.Future[Any]", prog: _Progress,
                first: list[dict[str, Any]]) -> web.StreamResponse:
    """Wait for the first message or the end: an error before any progress is an HTTP error;
    after it, errors are the stream's last message (Docker's rule)."""
    msg = await prog.q.get()
    if msg is None:  # ended before any progress: a failure is the answer's status
        await fut
    resp = await wire.stream(request)
    for m in first:
        await resp.write(json.dumps(m).encode() + b"\r\n")
    while msg is not None:
        await resp.write(json.dumps(msg).encode() + b"\r\n")
        msg = await prog.q.get()
    try:
        await fut
    except Exception as e:  # noqa: BLE001 - reported in the stream, as Docker does
        text = " ".join(str(e).split()) or type(e).__name__
        await resp.write(json.dumps({"errorDetail": {"message": text}, "error": text}).encode() + b"\r\n")
    await resp.write_eof()
    return resp


def _pull(store: "Store", d: "Daemon", ref: Any, options: Any, platform: Any, prog: _Progress) -> None:
    from graph.distribution.pull import pull

    def on(e: "Event") -> None:
        if e.phase == "waiting":
            prog.put({"status": "Pulling fs layer", "progressDetail": {}, "id": e.short_id})
            return
        if e.phase == "verifying":
            prog.put(progress_message(e, _PULL_WORDS))
            prog.put({"status": "Download complete", "progressDetail": {}, "id": e.short_id})
            return
        prog.put(progress_message(e, _PULL_WORDS))

    try:
        result = pull(store, ref, options=options, platform=platform, progress_fn=on)
        prog.put({"status": f"Digest: {result.digest}"})
        word = "Downloaded newer image for" if result.new else "Image is up to date for"
        prog.put({"status": f"Status: {word} {result.reference.familiar()}"})
        d.events.emit("image", "pull", result.reference.familiar(), {"name": result.reference.familiar()})
    finally:
        prog.put(None)


async def create(d: "Daemon", request: web.Request) -> web.StreamResponse:
    from graph.oci.formats import Platform
    from graph import parse_reference

    src = request.query.get("fromImage")
    if not src:
        if request.query.get("fromSrc"):
            raise ApiError(400, "importing a root filesystem (fromSrc) is not supported by lamina")
        raise ApiError(400, "fromImage is required")
    tag = request.query.get("tag") or ""
    name = src
    if tag:
        name = f"{src}@{tag}" if tag.startswith("sha256:") else f"{src}:{tag}"
    ref = parse_reference(name)
    plat = request.query.get("platform")
    platform = Platform.parse(plat) if plat else None
    options = auth.registry_options(d, ref.domain, auth.decode_auth_header(request.headers.get("X-Registry-Auth")))
    assert d.loop is not None
    prog = _Progress(d.loop)
    what = ref.tag if ref.digest is None else ref.digest
    first = [{"status": f"Pulling from {ref.familiar_name()}", "id": what}]
    fut = asyncio.ensure_future(d.call(_pull, d, ref, options, platform, prog))
    return await _pump(request, fut, prog, first)


# ---- tag, remove, history -------------------------------------------------------------------------
async def tag(d: "Daemon", request: web.Request, name: str) -> web.StreamResponse:
    repo = request.query.get("repo")
    if not repo:
        raise ApiError(400, "repo is required")
    t = request.query.get("tag") or "latest"

    def do(store: "Store") -> str:
        ref = store.tag(name, f"{repo}:{t}")
        return ref.familiar()

    target = await d.call(do)
    d.events.emit("image", "tag", name, {"name": target})
    return wire.no_content(201)


def _rmi(store: "Store", name: str, force: bool) -> list[dict[str, str]]:
    out = []
    for line in store.rmi(name, force=force):
        kind, _, what = line.partition(": ")
        out.append({kind: what})
    return out


async def remove(d: "Daemon", request: web.Request, name: str) -> web.StreamResponse:
    got = await d.call(_rmi, name, wire.qbool(request, "force"))
    for item in got:
        for k, v in item.items():
            d.events.emit("image", "untag" if k == "Untagged" else "delete", v, {"name": v})
    return wire.json_response(got)


def history_doc(store: "Store", name: str) -> list[dict[str, Any]]:
    img = store.resolve_image(name)
    cfg = store.images.config(img.id)
    layers = store.layers.stack(img.top_layer) if img.top_layer else []
    sizes = [layer.size for layer in layers]
    tags, _ = _tags_digests(store, img)
    entries = list(cfg.history) or [{"created": cfg.created, "created_by": ""} for _ in sizes]
    out: list[dict[str, Any]] = []
    li = 0
    for h in entries:
        empty = bool(h.get("empty_layer"))
        size = 0
        if not empty and li < len(sizes):
            size = sizes[li]
            li += 1
        out.append({"Id": "<missing>", "Created": unix_time(h.get("created")), "CreatedBy": h.get("created_by", ""),
                    "Tags": None, "Size": size, "Comment": h.get("comment", "")})
    out.reverse()
    if out:
        out[0]["Id"] = str(img.id)
        out[0]["Tags"] = tags or None
    return out


async def history(d: "Daemon", request: web.Request, name: str) -> web.StreamResponse:
    return wire.json_response(await d.call(history_doc, name))


# ---- push -----------------------------------------------------------------------------------------
def _push(store: "Store", d: "Daemon", ref: Any, options: Any, prog: _Progress) -> None:
    from graph.distribution.push import push

    try:
        prog.put({"status": f"The push refers to repository [{ref.name_only()}]"})

        def on(e: "Event") -> None:
            prog.put(progress_message(e, _PUSH_WORDS))

        r = push(store, ref, options=options, progress_fn=on)
        t = ref.tag or "latest"
        prog.put({"status": f"{t}: digest: {r.digest} size: {r.size}"})
        prog.put({"progressDetail": {}, "aux": {"Tag": t, "Digest": str(r.digest), "Size": r.size}})
        d.events.emit("image", "push", ref.familiar(), {"name": ref.familiar()})
    finally:
        prog.put(None)


async def push(d: "Daemon", request: web.Request, name: str) -> web.StreamResponse:
    from graph import parse_reference

    t = request.query.get("tag") or ""
    ref = parse_reference(f"{name}:{t}" if t else name)
    options = auth.registry_options(d, ref.domain, auth.decode_auth_header(request.headers.get("X-Registry-Auth")))
    await d.call(lambda s: s.resolve_image(str(ref)))  # 404 before the stream starts
    assert d.loop is not None
    prog = _Progress(d.loop)
    fut = asyncio.ensure_future(d.call(_push, d, ref, options, prog))
    return await _pump(request, fut, prog, [])


# ---- save, load -----------------------------------------------------------------------------------
async def _save(d: "Daemon", request: web.Request, names: list[str]) -> web.StreamResponse:
    from graph import save_archive

    if not names:
        raise ApiError(400, "no image names given")
    await d.call(lambda s: [s.resolve_image(n) for n in names])  # 404 before the stream starts
    resp = await wire.stream(request, "application/x-tar")
    assert d.loop is not None
    w = wire.ThreadWriter(d.loop, resp)
    try:
        await d.call(lambda s: save_archive(s, names, w))  # type: ignore[arg-type]
    except Exception:
        # headers are gone: end the connection so the client sees a truncated tar, not a whole one
        assert request.transport is not None
        request.transport.close()
        raise
    await resp.write_eof()
    for n in names:
        d.events.emit("image", "save", n, {"name": n})
    return resp


async def get_many(d: "Daemon", request: web.Request) -> web.StreamResponse:
    return await _save(d, request, request.query.getall("names", []))


async def get_one(d: "Daemon", request: web.Request, name: str) -> web.StreamResponse:
    return await _save(d, request, [name])


def _load(store: "Store", path: str) -> list[str]:
    from graph import load_archive

    lines = []
    for li in load_archive(store, path):
        if li.refs:
            lines += [f"Loaded image: {r.familiar()}" for r in li.refs]
        else:
            lines.append(f"Loaded image ID: {li.image_id}")
    return lines


async def load(d: "Daemon", request: web.Request) -> web.StreamResponse:
    root = await d.call(lambda s: str(s.root))
    path = await wire.spool_body(request, root)
    try:
        lines = await d.call(_load, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    for ln in lines:
        d.events.emit("image", "load", ln.split(": ", 1)[1], {"name": ln.split(": ", 1)[1]})
    body = b"".join(json.dumps({"stream": ln + "\n"}).encode() + b"\r\n" for ln in lines)
    return web.Response(body=body, content_type="application/json")


# ---- prune ----------------------------------------------------------------------------------------
def _prune(store: "Store", dangling_only: bool) -> dict[str, Any]:
    deleted: list[dict[str, str]] = []
    reclaimed = 0
    if not dangling_only:
        for img in store.images.list():
            if store.containers.using_image(img.id):
                continue
            _, _, size, _ = _image_facts(store, img)
            with contextlib.suppress(Exception):
                deleted += _rmi(store, str(img.id), True)
                reclaimed += size
    rep = store.prune()
    deleted += [{"Deleted": str(i)} for i in rep.images]
    return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed + rep.reclaimed}


async def prune(d: "Daemon", request: web.Request) -> web.StreamResponse:
    flt = wire.filters(request)
    wire.check_filters(flt, {"dangling", "until", "label"})
    dangling_only = not flt.get("dangling") or flt["dangling"][-1].lower() in ("1", "true")
    got = await d.call(_prune, dangling_only)
    d.events.emit("image", "prune", "", {"reclaimed": str(got["SpaceReclaimed"])})
    return wire.json_response(got)


ROUTES = [
    ("GET", r"/images/json", list_),
    ("POST", r"/images/create", create),
    ("GET", r"/images/get", get_many),
    ("POST", r"/images/load", load),
    ("POST", r"/images/prune", prune),
    ("GET", r"/images/(?P<name>.+)/json", inspect),
    ("GET", r"/images/(?P<name>.+)/history", history),
    ("GET", r"/images/(?P<name>.+)/get", get_one),
    ("POST", r"/images/(?P<name>.+)/tag", tag),
    ("POST", r"/images/(?P<name>.+)/push", push),
    ("DELETE", r"/images/(?P<name>.+)", remove),
]
