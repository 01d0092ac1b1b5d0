"""graph/content.py: the on-disk content store.

The behavioural contract runs from ``store_conformance.py`` (bound twice: durable, and without
fsync). What only a filesystem store has is tested here: layout and modes, visibility to other
processes, crashes (a child process SIGKILLed mid-write and at each commit step), processes
racing for one digest, sweep against live writers.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from graph.content import ContentStore
from graph.digest import Digest
from graph.errors import DigestMismatch
from graph.verify import CHUNK
from tests.graph.store_conformance import ContentStoreConformance

REPO = Path(__file__).resolve().parents[2]
DATA = os.urandom(4 * CHUNK + 999)
D = Digest.of(DATA)
HALF = 2 * CHUNK + 5


def _flip(path: Path) -> None:
    mode = os.stat(path).st_mode
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 0xFF]))
    os.chmod(path, mode & 0o777)


class TestOnDisk(ContentStoreConformance):
    def make_store(self, path: Path) -> ContentStore:
        return ContentStore(path / "store")

    def corrupt(self, store: ContentStore, d: Digest) -> None:
        _flip(store.path(d))

    def assert_clean(self, store: ContentStore) -> None:
        super().assert_clean(store)
        assert sorted(os.listdir(store.root / "ingest")) == ["sweep.lock"]


class TestOnDiskNoSync(TestOnDisk):
    def make_store(self, path: Path) -> ContentStore:
        return ContentStore(path / "store", durable=False)


# -- layout ---------------------------------------------------------------------------------------


def test_layout_and_modes(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    d = store.put_bytes(DATA)
    blob = tmp_path / "blobs" / "sha256" / d.hex
    assert store.path(d) == blob
    st = os.stat(blob)
    assert st.st_mode & 0o7777 == 0o444
    assert st.st_nlink == 1  # the ingest's name is gone
    assert sorted(os.listdir(tmp_path / "ingest")) == ["sweep.lock"]


def test_writer_path_shows_the_bytes_written(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with store.ingest(D, len(DATA), ref="r") as w:
        w.write(DATA[:100])
        assert w.path is not None and w.path.parent == tmp_path / "ingest"
        with open(w.path, "rb") as f:
            assert f.read() == DATA[:100]
        w.write(DATA[100:])
        w.commit()
        assert w.path is None
    with store.ingest(D) as w:
        assert w.done and w.path is None


@pytest.mark.parametrize("how", ["write", "write_from"])
def test_large_durable_ingest_with_early_writeback(tmp_path: Path, how: str) -> None:
    """Over 8 MiB a durable writer starts writeback as it goes (sync_file_range); the blob must
    come out the same."""
    import graph.content as content

    big = os.urandom(content._WRITEBACK_EVERY * 2 + 12345)
    store = ContentStore(tmp_path)
    with store.ingest(Digest.of(big), len(big)) as w:
        if how == "write":
            for i in range(0, len(big), 3 * CHUNK):
                w.write(big[i : i + 3 * CHUNK])
        else:
            w.write_from(io.BytesIO(big))
        assert w._flushed >= content._WRITEBACK_EVERY
        assert w.commit() == Digest.of(big)
    store.verify(Digest.of(big))


def test_walk_skips_foreign_names(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    d = store.put_bytes(b"x")
    (tmp_path / "blobs" / "sha256" / "README").write_text("not a blob")
    (tmp_path / "blobs" / "sha256" / ("A" * 64)).write_text("upper case is not ours")
    (tmp_path / "blobs" / "sha256" / ("0" * 64)).mkdir()
    assert list(store.walk()) == [(d, 1)]
    store.sweep()  # sweep never touches blobs/
    assert (tmp_path / "blobs" / "sha256" / "README").exists()


def test_resume_of_a_damaged_partial_fails_then_starts_over(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(OSError):
        with store.ingest(D, len(DATA), ref="r") as w:
            w.write(DATA[:HALF])
            raise OSError("transport")
    [partial] = [p for p in (tmp_path / "ingest").iterdir() if p.suffix == ".data"]
    _flip(partial)  # e.g. a power loss kept the length but not the bytes
    with pytest.raises(DigestMismatch):
        with store.ingest(D, len(DATA), ref="r") as w:
            assert w.offset == HALF
            w.write(DATA[HALF:])
            w.commit()
    assert store.ingests() == []
    with store.ingest(D, len(DATA), ref="r") as w:
        assert w.offset == 0
        w.write(DATA)
        assert w.commit() == D


def test_sweep_keeps_live_writers(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with store.ingest(D) as anon, store.ingest(D, ref="r") as named:
        anon.write(DATA[:10])
        named.write(DATA[:10])
        ContentStore(tmp_path)  # another opener sweeps
        store.sweep()
        anon.write(DATA[10:])
        named.write(DATA[10:])
        assert anon.commit() == D
        assert named.commit() == D
    assert sorted(os.listdir(tmp_path / "ingest")) == ["sweep.lock"]


def test_sweep_drops_useless_partials(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    ingest = tmp_path / "ingest"
    # 1: an interrupted ref'd ingest whose blob was stored meanwhile by someone else
    with pytest.raises(OSError):
        with store.ingest(D, ref="stored") as w:
            w.write(DATA[:10])
            raise OSError("transport")
    store.put_bytes(DATA)
    # 2: a descriptor that is not JSON; 3: an empty partial; 4: a stray lock; 5: a dead temp file
    (ingest / ("ref-" + "1" * 64 + ".json")).write_text("{not json")
    (ingest / ("ref-" + "1" * 64 + ".data")).write_bytes(b"abc")
    with pytest.raises(OSError):
        with store.ingest(None, ref="empty") as w:
            raise OSError("transport")
    (ingest / ("ref-" + "2" * 64 + ".lock")).touch()
    (ingest / "tmp-deadbeef").write_bytes(b"half")
    # 6: a resumable one, which stays
    with pytest.raises(OSError):
        with store.ingest(Digest.of(b"abcdef"), 6, ref="keep") as w:
            w.write(b"abc")
            raise OSError("transport")
    store.sweep()
    assert [s.ref for s in store.ingests()] == ["keep"]
    left = sorted(os.listdir(ingest))
    assert len(left) == 4 and "sweep.lock" in left  # keep's .lock, .json, .data
    with store.ingest(Digest.of(b"abcdef"), 6, ref="keep") as w:
        assert w.offset == 3
        w.write(b"def")
        w.commit()


def test_a_hostile_descriptor_is_not_trusted(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(OSError):
        with store.ingest(D, len(DATA), ref="r") as w:
            w.write(DATA[:10])
            raise OSError("transport")
    [meta] = (tmp_path / "ingest").glob("ref-*.json")
    for bad in ({"ref": "r", "expected": "sha256:../x", "size": 1, "started": 0},
                {"ref": "r", "expected": None, "size": -5, "started": 0},
                {"ref": ["r"], "expected": None, "size": None, "started": 0}):
        meta.write_text(json.dumps(bad))
        assert store.ingests() == []
    with store.ingest(D, len(DATA), ref="r") as w:
        assert w.offset == 0  # an unreadable descriptor means: start over


# -- other processes ------------------------------------------------------------------------------

CHILD = r"""
import os, signal, sys
from pathlib import Path
import graph.content as content
from graph.content import ContentStore
from graph.digest import Digest

root, data_path, mode, ref, kill_at = sys.argv[1:6]
ref = ref or None
data = Path(data_path).read_bytes()
d = Digest.of(data)

def say(*words):
    print(*words, flush=True)

def hook(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "pause-at-steps":
        say("step", step)
        sys.stdin.readline()
content._crash_hook = hook

store = ContentStore(Path(root))
say("open")
if mode == "put":
    sys.stdin.readline()
    say("stored", store.put_stream(open(data_path, "rb"), d, len(data)))
    raise SystemExit(0)
with store.ingest(d, len(data), ref=ref) as w:
    say("ingest", int(w.done), w.offset)
    if not w.done:
        half = len(data) // 2
        if w.offset < half:
            w.write(data[w.offset:half])
            say("half")
            sys.stdin.readline()
        w.write(data[w.offset:])
    say("committed", w.commit())
"""


class Child:
    """A helper process running CHILD; killed by PID on teardown."""

    def __init__(self, root: Path, data_path: Path, mode: str, ref: str = "", kill_at: str = "") -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.p = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(data_path), mode, ref, kill_at],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
        )

    def expect(self, word: str) -> list[str]:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line:
            self.p.wait(30)
            assert self.p.stderr is not None
            raise AssertionError(f"child exited {self.p.returncode} waiting for {word!r}: {self.p.stderr.read()[-2000:]}")
        parts = line.split()
        assert parts[0] == word, line
        return parts[1:]

    def go(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write("\n")
        self.p.stdin.flush()

    def kill(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(30)

    def finish(self) -> int:
        rc = self.p.wait(60)
        return rc

    def close(self) -> None:
        self.kill()
        for s in (self.p.stdin, self.p.stdout, self.p.stderr):
            if s is not None:
                s.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    children: list[Child] = []
    data_path = tmp_path / "data"
    data_path.write_bytes(DATA)

    def make(mode: str, ref: str = "", kill_at: str = "") -> Child:
        c = Child(tmp_path / "store", data_path, mode, ref, kill_at)
        children.append(c)
        return c

    try:
        yield make
    finally:
        for c in children:
            c.close()


def _wait_blocked_on_flock(pid: int) -> None:
    """Wait until ``pid`` waits for a flock (``/proc/locks`` lists waiters with ``->``)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" in fields and "FLOCK" in fields and str(pid) in fields:
                return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never waited for a lock")


def _blob_names(root: Path) -> list[str]:
    return os.listdir(root / "blobs" / "sha256")


@pytest.mark.parametrize("ref", ["", "pull-1"])
def test_nothing_is_visible_before_commit(spawn: Callable[..., Child], tmp_path: Path, ref: str) -> None:
    root = tmp_path / "store"
    c = spawn("pause-at-steps", ref)
    c.expect("open")
    c.expect("ingest")
    c.expect("half")
    store = ContentStore(root)  # this process is the reader (and its open sweeps)
    assert not store.exists(D) and _blob_names(root) == [] and list(store.walk()) == []
    c.go()
    assert c.expect("step") == ["synced"]  # complete, verified and synced, not linked yet
    assert not store.exists(D) and _blob_names(root) == []
    c.go()
    assert c.expect("step") == ["linked"]
    assert store.exists(D)
    store.verify(D)
    c.go()
    assert c.expect("committed") == [D]
    assert c.finish() == 0


@pytest.mark.parametrize("ref", ["", "pull-1"])
@pytest.mark.parametrize("kill_at", ["half", "synced", "linked"])
def test_crash_leaves_only_complete_blobs_or_resumable_partials(
    spawn: Callable[..., Child], tmp_path: Path, ref: str, kill_at: str
) -> None:
    root = tmp_path / "store"
    c = spawn("pause-at-steps" if kill_at == "half" else "ingest", ref, "" if kill_at == "half" else kill_at)
    c.expect("open")
    c.expect("ingest")
    if kill_at == "half":
        c.expect("half")
        c.kill()
    else:
        c.expect("half")
        c.go()
        assert c.finish() == -signal.SIGKILL
    store = ContentStore(root)  # reopen: sweep
    names = sorted(os.listdir(root / "ingest"))
    stored = _blob_names(root)
    if kill_at == "linked":
        assert stored == [D.hex]
        store.verify(D)
        assert names == ["sweep.lock"]  # the leftover ingest of a stored blob is swept
        return
    assert stored == []
    if not ref:
        assert names == ["sweep.lock"]  # a ref-less temp file of a dead writer is garbage
        return
    [st] = store.ingests()  # a ref'd partial stays, resumable
    assert st.ref == ref and st.expected == D
    assert st.offset == (len(DATA) // 2 if kill_at == "half" else len(DATA))
    c2 = spawn("ingest", ref)
    c2.expect("open")
    done, offset = c2.expect("ingest")
    assert (done, int(offset)) == ("0", st.offset)
    if int(offset) < len(DATA) // 2:
        c2.expect("half")
        c2.go()
    assert c2.expect("committed") == [D]
    assert c2.finish() == 0
    assert sorted(os.listdir(root / "ingest")) == ["sweep.lock"]
    store.verify(D)


def test_processes_storing_one_digest_at_once_all_succeed(spawn: Callable[..., Child], tmp_path: Path) -> None:
    root = tmp_path / "store"
    # three writers with their own temp files, all holding half the blob at the same moment
    writers = [spawn("ingest", ref) for ref in ("", "", "pull-a")]
    for w in writers:
        w.expect("open")
        assert w.expect("ingest") == ["0", "0"]
        w.expect("half")
    putters = [spawn("put") for _ in range(2)]
    for p in putters:
        p.expect("open")
        p.go()
    for w in writers:
        w.go()
    for w in writers:
        assert w.expect("committed") == [D]
        assert w.finish() == 0
    for p in putters:
        assert p.expect("stored") == [D]
        assert p.finish() == 0
    assert _blob_names(root) == [D.hex]
    assert sorted(os.listdir(root / "ingest")) == ["sweep.lock"]
    ContentStore(root).verify(D)


def test_second_writer_of_a_ref_waits_then_finds_the_blob(spawn: Callable[..., Child], tmp_path: Path) -> None:
    first = spawn("ingest", "pull-x")
    first.expect("open")
    first.expect("ingest")
    first.expect("half")
    second = spawn("ingest", "pull-x")
    second.expect("open")
    _wait_blocked_on_flock(second.p.pid)
    first.go()
    assert first.expect("committed") == [D]
    assert second.expect("ingest") == ["1", str(len(DATA))]  # done: nothing to write
    assert second.expect("committed") == [D]
    assert first.finish() == 0 and second.finish() == 0
    assert sorted(os.listdir(tmp_path / "store" / "ingest")) == ["sweep.lock"]


def test_second_writer_of_a_ref_resumes_when_the_first_dies(spawn: Callable[..., Child], tmp_path: Path) -> None:
    first = spawn("ingest", "pull-x")
    first.expect("open")
    first.expect("ingest")
    first.expect("half")
    second = spawn("ingest", "pull-x")
    second.expect("open")
    _wait_blocked_on_flock(second.p.pid)
    first.kill()
    assert second.expect("ingest") == ["0", str(len(DATA) // 2)]
    assert second.expect("committed") == [D]
    assert second.finish() == 0
    ContentStore(tmp_path / "store").verify(D)


def test_put_stream_through_a_real_pipe(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    src = tmp_path / "src"
    src.write_bytes(DATA)
    p = subprocess.Popen(["cat", "--", str(src)], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None
        assert store.put_stream(p.stdout, D, len(DATA)) == D  # type: ignore[arg-type]
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(30)
        if p.stdout is not None:
            p.stdout.close()
    with store.open(D) as f:
        assert f.read() == DATA


def test_durable_store_syncs_before_linking(tmp_path: Path) -> None:
    """Order check through the crash hook: at "synced" the data file is complete and already
    read-only, and nothing is in blobs/ yet."""
    import graph.content as content

    store = ContentStore(tmp_path)
    seen: list[tuple[str, list[str], int]] = []

    def hook(step: str) -> None:
        [tmp] = [p for p in (tmp_path / "ingest").iterdir() if p.name.startswith("tmp-")]
        seen.append((step, _blob_names(tmp_path), os.stat(tmp).st_mode & 0o777))

    content._crash_hook = hook
    try:
        store.put_stream(io.BytesIO(DATA), D)
    finally:
        content._crash_hook = None
    assert seen == [("synced", [], 0o444), ("linked", [D.hex], 0o444)]
