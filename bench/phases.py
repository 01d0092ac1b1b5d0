"""The phases: what each one times, and the container lifecycle that times them in turn.

A *phase* is one step of an image's life on a driver, timed on its own; everything around it
(making the store, preparing changes, dropping caches, tearing down) is setup and not timed.
One repetition of a (driver, workload) cell runs the lifecycle below in a fresh process
(``bench.worker``), on a fresh store on the bench's own filesystem:

====================  ===========================================================================
pull                  ``graph.pull`` from the bench's local registry into an empty store:
                      download, verify, decompress and apply every layer (overlapped), record
                      the image and its reference. Its own store, removed afterwards.
load                  ``graph.archive.load_archive`` of the workload's OCI layout (gzip layers)
                      into an empty store: ingest and verify every blob, decompress, apply.
                      Its own store, removed afterwards.
materialise           apply every uncompressed layer tar in order (``store.layers.register``:
                      the DiffID hashed in the stream, data synced) and record the image.
create                ``Store.create_container``: the container's read-write layer.
mount                 ``store.containers.mount``: the merged rootfs, ready to use.
start                 run ``/bin/true`` in the container until it exits (needs ``runtime/``).
walk                  metadata walk, cold: caches dropped, then lstat every entry and list every
                      directory of the merged rootfs.
read                  cold read: caches dropped, then read every regular file in full.
copy-up               open the largest lower file for writing and write 1 byte at offset 0
                      (a union driver copies the file up first).
commit                ``Store.commit`` after the container added 100 files and deleted 5: diff,
                      apply as a new layer, record the image.
remove                remove the container, then both images (the committed one and the
                      workload's) with all their layers.
====================  ===========================================================================

A task may ask for *repeats* of the cheap phases (``task["repeats"]``, e.g. ``{"materialise": 9}``,
from the profile): the phase then runs K times in the repetition, each time on a fresh store and
each time its own turn of an A/B pair (``bench/interleave.py``); the sample is the median of the K
timings and ``extra["samples"]`` keeps all of them, in order, so the A/B analysis can pair the
k-th timing of one side with the k-th of the other (one phase apart in time). The extra runs of
``materialise`` and ``remove`` go to throwaway stores before the one the later phases use: each is
materialised, given a container (created, mounted and unmounted, untimed) and removed again, so a
repeated ``remove`` deletes the same layers and read-write layer the main one does (without the
committed image, which only the main store has).

Modules lamina imports lazily (the HTTP client, decompressors) are imported before anything is
timed: an import is the process's one-off cost, not a phase's. Layer sources are read into the
page cache first. Phases not asked for are skipped, except that ``materialise``, ``create`` and ``mount`` still run
(untimed) when a later phase needs what they make. A phase that cannot run here (no runtime yet,
no registry) is recorded with the reason, never silently left out.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench import fs, interleave

# ---- the catalogue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    what: str


PHASES: tuple[Phase, ...] = (
    Phase("pull", "pull", "graph.pull from a local registry into an empty store (download, verify, apply)"),
    Phase("load", "load", "load_archive of an OCI layout with gzip layers into an empty store"),
    Phase("materialise", "materialise", "apply every uncompressed layer in order and record the image"),
    Phase("create", "create", "create a container: its read-write layer"),
    Phase("mount", "mount", "mount the container's merged rootfs"),
    Phase("start", "start", "run /bin/true in the container until it exits"),
    Phase("walk", "metadata walk", "lstat every entry, list every directory; caches dropped first"),
    Phase("read", "cold read", "read every regular file in full; caches dropped first"),
    Phase("copy-up", "copy-up write", "write 1 byte at offset 0 of the largest lower file"),
    Phase("commit", "commit", "commit the container (100 files added, 5 deleted) as a new image"),
    Phase("remove", "remove", "remove the container and its images with all their layers"),
)
PHASE_NAMES: tuple[str, ...] = tuple(p.name for p in PHASES)
# the phases a profile may repeat K times per repetition (module docstring)
REPEATABLE = ("pull", "load", "materialise", "remove")
BY_NAME = {p.name: p for p in PHASES}
# the path from "image in a registry" to "container running", for the waterfall plot
CRITICAL_PATH = ("pull", "create", "mount", "start")

COMMIT_NEW_FILES = 100
COMMIT_DELETED = 5


# ---- tree operations (shared with the roofline, which runs them on a plain directory) ----------


def walk_tree(root: str) -> tuple[int, int]:
    """lstat every entry and list every directory under ``root``; returns (entries, dirs)."""
    entries = dirs = 0
    stack = [root]
    while stack:
        d = stack.pop()
        dirs += 1
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                entries += 1
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
    return entries, dirs


def read_tree(root: str) -> tuple[int, int]:
    """Read every regular file under ``root`` in full; returns (files, bytes)."""
    buf = bytearray(1 << 20)
    files = total = 0
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW)
                    try:
                        while True:
                            k = os.readv(fd, [buf])
                            if not k:
                                break
                            total += k
                    finally:
                        os.close(fd)
                    files += 1
    return files, total


def fingerprint(root: str) -> dict[str, Any]:
    """A content fingerprint of the tree (xxh3-128 over sorted paths, types, modes, owners,
    sizes, link targets and file contents; directory times left out) and its counts, so the
    bench can check that every driver materialised the same tree."""
    import xxhash

    h = xxhash.xxh3_128()
    files = dirs = symlinks = total = 0
    buf = bytearray(1 << 20)
    for dirpath, dnames, fnames in os.walk(root):
        dnames.sort()
        for name in sorted(dnames + fnames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0{st.st_uid}\0{st.st_gid}\0".encode(
                "utf-8", "surrogateescape"))
            if stat.S_ISREG(st.st_mode):
                files += 1
                total += st.st_size
                h.update(str(st.st_size).encode())
                with open(full, "rb", buffering=0) as f:
                    c = xxhash.xxh3_64()
                    while True:
                        k = f.readinto(buf)
                        if not k:
                            break
                        c.update(memoryview(buf)[:k])
                    h.update(c.digest())
            elif stat.S_ISLNK(st.st_mode):
                symlinks += 1
                h.update(os.readlink(full).encode("utf-8", "surrogateescape"))
            elif stat.S_ISDIR(st.st_mode):
                dirs += 1
    return {"xxh3": h.hexdigest(), "files": files, "dirs": dirs, "symlinks": symlinks, "bytes": total}


def write_one_byte(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.pwrite(fd, b"x", 0)
    finally:
        os.close(fd)


# ---- what lamina offers (imported lazily: a missing piece is a reason, not a crash) -------------


def pull_function() -> tuple[Callable[..., Any] | None, str | None]:
    """``(pull, None)`` when lamina has a pull, else ``(None, reason)``. Older revisions (an A/B
    base) kept it in ``graph.pull``, newer ones in ``graph.distribution.pull``."""
    try:
        from graph import pull
        from graph import RegistryOptions
    except ImportError as e:
        try:
            from graph.pull import pull  # type: ignore[no-redef]
            from graph.registry import RegistryOptions  # type: ignore[no-redef]
        except ImportError:
            return None, f"graph.distribution.pull is not available: {e}"

    def do_pull(store: Any, ref: str, host: str) -> Any:
        return pull(store, ref, options=RegistryOptions(insecure=frozenset({host})))

    return do_pull, None


def start_function() -> tuple[Callable[[Any, Any], None] | None, str | None]:
    """The runtime's way to run a created container's command (``/bin/true``) to its exit, or
    why there is none: ``runtime.start(store, id, attach=True)`` then ``runtime.wait`` (output
    to /dev/null). The start phase times both: mount, bundle, monitor, the OCI runtime, the
    process, the exit recorded and the rootfs released."""
    try:
        import runtime
    except ImportError as e:
        return None, f"runtime package missing: {e}"
    start = getattr(runtime, "start", None)
    wait = getattr(runtime, "wait", None)
    if start is None or wait is None:
        return None, "runtime/ has not landed yet (no runtime.start / runtime.wait)"

    def run(store: Any, container: Any) -> None:
        with open(os.devnull, "wb") as null:
            running = start(store, container.id, attach=True)
            status = wait(store, running, null, null)
        if status != 0:
            raise RuntimeError(f"/bin/true exited {status}")

    return run, None


# the container config the bench creates: Docker's shape, as `lamina create` records it
CONTAINER_CONFIG: dict[str, Any] = {
    "Cmd": ["/bin/true"],
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "HostConfig": {"NetworkMode": "none"},
}


# ---- the lifecycle ------------------------------------------------------------------------------


def _preimport() -> None:
    """Import what lamina imports lazily (HTTP client, decompressors, the layer store) before
    anything is timed: a module's import is the process's one-off cost, not a phase's."""
    import importlib

    for name in ("httpx", "zstandard", "isal.igzip", "isal.isal_zlib", "gzip", "lzma", "bz2", "xxhash",
                 "graph", "graph.distribution.pull", "graph.distribution.registry", "graph.pull", "graph.registry",
                 "graph.archive", "graph.unpack", "runtime", "drivers", "drivers.tar.apply", "drivers.tar.diff",
                 "drivers.tarapply", "drivers.tardiff", "drivers.diffdirs", "drivers.overlay", "drivers.vfs",
                 "drivers.btrfs"):  # old and new module names: an A/B base may be older
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


class _Skip(Exception):
    """A phase that cannot run in this repetition (a dependency failed or is missing)."""


@dataclass
class Outcome:
    seconds: float | None = None
    error: str | None = None
    skipped: str | None = None
    extra: dict[str, Any] | None = None
    cpu_seconds: float | None = None  # user + sys of the worker (all threads, reaped children)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k in ("seconds", "cpu_seconds", "error", "skipped", "extra"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d


def _cpu() -> float:
    """User + system seconds of this process (every thread) and its reaped children, at the
    kernel's accounting resolution (getrusage; os.times() counts in 10 ms ticks)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _describe(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:300]


def destroy_store(root: Path, driver: str) -> None:
    """Remove everything a store holds through lamina (btrfs layers are read-only subvolumes;
    mounts must go first), then its directory. Best effort, never raises for a missing store."""
    if not root.exists():
        return
    with contextlib.suppress(Exception):
        from graph import Store

        with Store(root, driver=driver) as s:
            for c in s.containers.list():
                with contextlib.suppress(Exception):
                    s.remove_container(c.id, force=True)
            for img in s.images.list():
                with contextlib.suppress(Exception):
                    s.rmi(img.id, force=True)
            with contextlib.suppress(Exception):
                s.prune()
            with contextlib.suppress(Exception):
                s.driver.cleanup()
    fs.rmtree(root)


class Lifecycle:
    """One repetition of the lifecycle of one workload on one driver (see the module docstring)."""

    def __init__(self, task: dict[str, Any]) -> None:
        from bench.workloads import Workload

        self.task = task
        self.driver: str = task["driver"]
        self.w = Workload.from_json(task["workload"])
        self.base = Path(task["store_base"])
        self.rep: int = task["rep"]
        self.wanted: set[str] = set(task["phases"])
        self.registry: dict[str, str] | None = task.get("registry")
        self.repeats: dict[str, int] = {k: max(1, int(v)) for k, v in (task.get("repeats") or {}).items()}
        self.out: dict[str, Outcome] = {}
        self.info: dict[str, Any] = {}

    # -- helpers
    def _root(self, kind: str) -> Path:
        return self.base / f"{self.driver[:3]}-r{self.rep}-{kind}"

    def _time(self, name: str, fn: Callable[[], Any], *, record: bool = True) -> Any:
        """Run ``fn``; when ``name`` is wanted and ``record``, keep its time. Errors propagate
        after being recorded."""
        try:
            return self._timed(name, fn, record)
        finally:
            if name in self.wanted:  # a phase boundary: the other side of an A/B pair's turn
                interleave.gate().turn(name)

    def _timed(self, name: str, fn: Callable[[], Any], record: bool) -> Any:
        c0 = _cpu()
        t0 = time.perf_counter()
        try:
            result = fn()
        except _Skip as e:
            if name in self.wanted:
                self.out[name] = Outcome(skipped=str(e))
            raise
        except Exception as e:
            if name in self.wanted:
                self.out[name] = Outcome(error=_describe(e))
                self.info.setdefault("tracebacks", {})[name] = traceback.format_exc()[-2000:]
            raise
        dt = time.perf_counter() - t0
        if record and name in self.wanted:
            self.out[name] = Outcome(seconds=dt, cpu_seconds=round(_cpu() - c0, 5))
        return result

    def _fold_repeats(self, name: str, outcomes: list[Outcome]) -> None:
        """One outcome from the K timings of a repeated phase: the median as the sample, every
        timing in ``extra["samples"]``, the median of their CPU times. A failed run fails the
        phase (its outcome is kept as it is)."""
        if len(outcomes) < 2 or any(o.seconds is None for o in outcomes):
            bad = next((o for o in outcomes if o.seconds is None), None)
            if bad is not None:
                self.out[name] = bad
            return
        times = [o.seconds for o in outcomes if o.seconds is not None]
        cpus = [o.cpu_seconds for o in outcomes if o.cpu_seconds is not None]
        extra = dict(outcomes[-1].extra or {})
        extra["samples"] = times
        self.out[name] = Outcome(seconds=statistics.median(times),
                                 cpu_seconds=round(statistics.median(cpus), 5) if cpus else None, extra=extra)

    def _skip_rest(self, names: list[str], why: str) -> None:
        for n in names:
            if n in self.wanted and n not in self.out:
                self.out[n] = Outcome(skipped=why)

    # -- the separate-store phases
    def phase_pull(self) -> None:
        if "pull" not in self.wanted:
            return
        do_pull, reason = pull_function()
        if do_pull is None:
            self.out["pull"] = Outcome(skipped=reason)
            return
        if not self.registry:
            self.out["pull"] = Outcome(skipped=self.task.get("registry_reason") or "no registry")
            return
        from graph import Store

        def once(root: Path) -> None:
            fs.warm(self.registry.get("blob_files", []))
            with Store(root, driver=self.driver) as store:
                res = self._time("pull", lambda: do_pull(store, self.registry["ref"], self.registry["host"]))
                applied = store.layers.list()
                self.out["pull"].extra = {"layers_applied": len(applied),
                                          "timings": dict(getattr(res, "timings", {}) or {})}

        self._on_own_stores("pull", once)

    def phase_load(self) -> None:
        if "load" not in self.wanted:
            return
        from graph import Store
        from graph import load_archive

        def once(root: Path) -> None:
            fs.warm([self.w.layout])
            with Store(root, driver=self.driver) as store:
                self._time("load", lambda: load_archive(store, self.w.layout))

        self._on_own_stores("load", once)

    def _on_own_stores(self, name: str, once: Callable[[Path], None]) -> None:
        """A separate-store phase, ``repeats[name]`` times (default once), each run on an empty
        store of its own, removed afterwards; stops at the first run that fails."""
        runs: list[Outcome] = []
        for k in range(self.repeats.get(name, 1)):
            self.out.pop(name, None)
            root = self._root(f"{name}{k}" if k else name)
            destroy_store(root, self.driver)
            try:
                once(root)
            except Exception:
                pass
            finally:
                destroy_store(root, self.driver)
            o = self.out.get(name)
            if o is None:
                break
            runs.append(o)
            if o.seconds is None:
                break
        self._fold_repeats(name, runs)

    # -- the main line
    def run(self) -> dict[str, Any]:
        _preimport()
        self.phase_pull()
        self.phase_load()
        main = ["materialise", "create", "mount", "start", "walk", "read", "copy-up", "commit", "remove"]
        if not (self.wanted & set(main)):
            return self.result()
        from graph import Store

        root = self._root("main")
        destroy_store(root, self.driver)
        fs.warm([lf.tar for lf in self.w.layers])
        runs = self._throwaway_stores()
        store = Store(root, driver=self.driver)
        container = None
        mounted = False
        try:
            try:
                self._time("materialise", lambda: self._materialise(store))
            except Exception:
                self._skip_rest(main, "materialise failed")
                return self.result()
            finally:
                if runs["materialise"] and "materialise" in self.out:
                    self._fold_repeats("materialise", [*runs["materialise"], self.out["materialise"]])
            if "commit" in self.wanted:
                self._record_blobs(store)

            try:
                container = self._time("create", lambda: store.create_container(
                    self.w.ref, name="bench", config=dict(CONTAINER_CONFIG)))
            except Exception:
                self._skip_rest(main[2:-1], "create failed")
                container = None
            if container is not None:
                self._container_phases(store, container)
                mounted = store.containers.mounted(container) > 0
            try:
                if container is not None and mounted:
                    while store.containers.mounted(container) > 0:
                        store.containers.unmount(container)
                self._time("remove", lambda: self._remove(store, container))
                left = store.layers.list()
                if left and "remove" in self.out and self.out["remove"].seconds is not None:
                    self.out["remove"].extra = {"layers_left": len(left)}
            except Exception:
                pass
            finally:
                if runs["remove"] and "remove" in self.out:
                    self._fold_repeats("remove", [*runs["remove"], self.out["remove"]])
        finally:
            with contextlib.suppress(Exception):
                store.close()
            destroy_store(root, self.driver)
        return self.result()

    def _materialise(self, store: Any) -> Any:
        """Every layer tar applied in order (``register``: DiffID hashed, data synced), then the
        image and its reference recorded."""
        from graph import DiffID, Digest, parse_reference

        parent = None
        for lf in self.w.layers:
            with open(lf.tar, "rb") as f:
                layer = store.layers.register(f, parent, expected_diff_id=DiffID(Digest(lf.diff_id)))
            parent = layer.chain_id
        img = store.images.create(Path(self.w.config).read_bytes())
        store.refs.add(parse_reference(self.w.ref), img.id)
        return img

    def _throwaway_stores(self) -> dict[str, list[Outcome]]:
        """The first K-1 of K repeated materialises and removes, each pair on a store of its own:
        the image materialised, a container created and mounted (untimed), then both removed
        (the K-th of each is the main store's, which the later phases use). Stops at the first
        failure. A store whose materialise is not repeated is still materialised (untimed): a
        remove needs something to remove."""
        from graph import Store

        k_mat, k_rm = (self.repeats.get(n, 1) if n in self.wanted else 1 for n in ("materialise", "remove"))
        runs: dict[str, list[Outcome]] = {"materialise": [], "remove": []}
        for k in range(1, max(k_mat, k_rm)):
            root = self._root(f"mat{k}")
            destroy_store(root, self.driver)
            try:
                with Store(root, driver=self.driver) as store:
                    if k < k_mat:
                        self._time("materialise", lambda: self._materialise(store))
                    else:
                        self._materialise(store)
                    if k < k_rm:
                        c = store.create_container(self.w.ref, name="bench", config=dict(CONTAINER_CONFIG))
                        store.containers.mount(c)
                        store.containers.unmount(c)
                        self._time("remove", lambda: self._remove(store, c))
            except Exception:
                pass
            finally:
                destroy_store(root, self.driver)
            for name, wanted in (("materialise", k < k_mat), ("remove", k < k_rm)):
                o = self.out.pop(name, None)
                if wanted:
                    if o is None or o.seconds is None:
                        return runs
                    runs[name].append(o)
        return runs

    def _remove(self, store: Any, container: Any) -> None:
        """The container, then the images with every layer of theirs (the committed one first)."""
        if container is not None:
            store.remove_container(container.id, force=True)
        with contextlib.suppress(Exception):
            store.rmi("bench/commit:latest")
        with contextlib.suppress(Exception):
            store.rmi(self.w.ref, force=True)

    def _record_blobs(self, store: Any) -> None:
        """Untimed: keep the layer blobs in the content store, as a pull would have, so ``commit``
        can write a manifest for the new image (it lists every layer's blob)."""
        from graph import DiffID, Digest

        for lf in self.w.layers:
            with open(lf.blob, "rb") as f:
                store.content.put_stream(f, expected=Digest(lf.digest), size=lf.blob_size)
            store.record_layer_blob(DiffID(Digest(lf.diff_id)), Digest(lf.digest), lf.media_type, lf.blob_size)

    def _container_phases(self, store: Any, c: Any) -> None:
        later = ["start", "walk", "read", "copy-up", "commit"]
        need_mount = bool(self.wanted & {"mount", "walk", "read", "copy-up", "commit"}) or self.task.get("fingerprint")
        path = None
        if need_mount:
            try:
                path = self._time("mount", lambda: store.containers.mount(c))
            except Exception:
                self._skip_rest(later, "mount failed")
                return
        if self.task.get("fingerprint") and path:
            self.info["fingerprint"] = fingerprint(path)
        if "start" in self.wanted:
            start, reason = start_function()
            if not self.w.runnable:
                self.out["start"] = Outcome(skipped="the workload has no /bin/true to run")
            elif start is None:
                self.out["start"] = Outcome(skipped=reason)
            else:
                with contextlib.suppress(Exception):
                    self._time("start", lambda: start(store, c))
            from bench import daemon_path  # the same start through the lamina CLI and the daemon

            for name, o in daemon_path.measure(store.root, self.driver, self.w.ref, self.w.runnable).items():
                self.out[name] = Outcome(**o)
        if path is None:
            return
        if "walk" in self.wanted:
            method = fs.drop_caches([path])
            with contextlib.suppress(Exception):
                n, d = self._time("walk", lambda: walk_tree(path))
                self.out["walk"].extra = {"entries": n, "dirs": d, "cache": method}
        if "read" in self.wanted:
            method = fs.drop_caches([path])
            with contextlib.suppress(Exception):
                n, b = self._time("read", lambda: read_tree(path))
                self.out["read"].extra = {"files": n, "bytes": b, "cache": method}
        largest = self.w.tree.get("largest")
        if "copy-up" in self.wanted:
            if not largest:
                self.out["copy-up"] = Outcome(skipped="workload has no regular file")
            else:
                target = os.path.join(path, largest)
                with contextlib.suppress(Exception):
                    self._time("copy-up", lambda: write_one_byte(target))
                    self.out["copy-up"].extra = {"file_size": self.w.tree.get("largest_size")}
        if "commit" in self.wanted:
            try:
                self._prepare_commit(path)
                self._time("commit", lambda: store.commit(c.id, "bench/commit:latest"))
            except Exception as e:
                if "commit" not in self.out:
                    self.out["commit"] = Outcome(error=f"preparing the changes: {_describe(e)}")

    def _prepare_commit(self, path: str) -> None:
        """The container's changes before ``commit`` (untimed): new files and deletions."""
        d = os.path.join(path, "bench-commit")
        os.makedirs(d, exist_ok=True)
        block = os.urandom(4096)
        for i in range(COMMIT_NEW_FILES):
            with open(os.path.join(d, f"f{i:03d}"), "wb") as f:
                f.write(block)
        deleted = 0
        largest = self.w.tree.get("largest")
        for dirpath, dnames, fnames in os.walk(path):
            dnames.sort()
            for name in sorted(fnames):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, path)
                if rel == largest or rel.startswith("bench-commit/") or not os.path.isfile(full) \
                        or os.path.islink(full):
                    continue
                os.unlink(full)
                deleted += 1
                if deleted >= COMMIT_DELETED:
                    return

    def result(self) -> dict[str, Any]:
        return {"phases": {k: v.to_json() for k, v in self.out.items()}, "info": self.info}


# ---- the concurrent-containers series -------------------------------------------------------


def _concurrent_child(root: str, driver: str, ref: str, name: str, start_wanted: bool,
                      barrier: Any, queue: Any) -> None:
    from graph import Store

    try:
        with Store(root, driver=driver) as store:
            barrier.wait(60)
            t0 = time.perf_counter()
            c = store.create_container(ref, name=name, config=dict(CONTAINER_CONFIG))
            t1 = time.perf_counter()
            store.containers.mount(c)
            t2 = time.perf_counter()
            if start_wanted:
                start, _ = start_function()
                if start is not None:
                    start(store, c)
            t3 = time.perf_counter()
            queue.put((name, t0, t1, t2, t3, None))
    except Exception as e:  # reported to the parent, which records it
        queue.put((name, 0.0, 0.0, 0.0, 0.0, _describe(e)))


def concurrent(task: dict[str, Any]) -> dict[str, Any]:
    """For each N: N processes each create and mount a container (and start it, once the runtime
    exists) at the same moment; the sample is the wall time from the common start to the last
    one done. Setup (materialising the image) and teardown are not timed."""
    import multiprocessing as mp

    from bench.workloads import Workload
    from graph import Store, parse_reference
    from graph import DiffID, Digest

    w = Workload.from_json(task["workload"])
    driver = task["driver"]
    root = Path(task["store_base"]) / f"{driver[:3]}-r{task['rep']}-conc"
    destroy_store(root, driver)
    out: dict[str, Any] = {}
    start, reason = start_function()
    if not w.runnable:
        start, reason = None, "the workload has no /bin/true"
    try:
        with Store(root, driver=driver) as store:
            parent = None
            for lf in w.layers:
                with open(lf.tar, "rb") as f:
                    parent = store.layers.register(f, parent, expected_diff_id=DiffID(Digest(lf.diff_id))).chain_id
            img = store.images.create(Path(w.config).read_bytes())
            store.refs.add(parse_reference(w.ref), img.id)
        ctx = mp.get_context("fork")
        for n in task["counts"]:
            barrier = ctx.Barrier(n)
            queue = ctx.Queue()
            procs = [ctx.Process(target=_concurrent_child,
                                 args=(str(root), driver, w.ref, f"c{n}-{i}", start is not None, barrier, queue))
                     for i in range(n)]
            for p in procs:
                p.start()
            rows = [queue.get(timeout=600) for _ in procs]
            for p in procs:
                p.join(60)
            errors = [r[5] for r in rows if r[5]]
            if errors:
                out[str(n)] = {"error": errors[0]}
            else:
                t0 = min(r[1] for r in rows)
                out[str(n)] = {
                    "seconds": max(r[4] for r in rows) - t0,
                    "extra": {"create_mount_each": sorted(r[3] - r[1] for r in rows),
                              "start": "included" if start is not None else f"not included: {reason}"},
                }
            with Store(root, driver=driver) as store:
                for c in store.containers.list():
                    with contextlib.suppress(Exception):
                        store.remove_container(c.id, force=True)
    finally:
        destroy_store(root, driver)
    return {"counts": out}
