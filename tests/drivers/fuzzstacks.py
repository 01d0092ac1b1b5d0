"""The differential fuzzer's layer stacks (``tests/drivers/test_differential.py``): the generator
and the bounded profile, which draws the same stacks on every machine.

Why the profile needs more than ``derandomize``: hypothesis (since 6.131) also draws "local
constants", literals it collects from every project module in ``sys.modules`` that is not a test
file (``hypothesis.internal.conjecture.providers._get_local_constants``). Which modules those are
depends on what ran before in the same process (a full ``make test`` imports the CLI, the daemon,
runtime and bench before the fuzzer; ``pytest tests/drivers/test_differential.py`` does not; a
test skipped on one machine imports nothing), and their literals change with every commit
anywhere in the project. With a fixed seed the stacks still changed whenever that pool did: a
fresh Debian tree drew an implicit parent under a setgid lower dir that the developer machine
never drew. So the bounded profile runs with that pool emptied (``same_stacks_everywhere``),
with an explicit seed, no example database, every relevant setting explicit (the ``ci`` profile
that hypothesis loads when ``$CI`` is set changes no draw), and hypothesis pinned in
pyproject.toml (its generation changes between versions). ``PROFILE_DIGEST`` is the digest of
the stacks it draws; ``tests/drivers/test_fuzz_profile.py`` checks it in fresh interpreters
with different imports, hash seeds and working directories. Change the generator, the model or
hypothesis and that digest changes: update it (``python -m tests.drivers.fuzzstacks``).

``LAMINA_FUZZ=long``: random stacks (no seed), the example database on, many more of them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import unicodedata
from typing import Any, Callable, Iterator

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.drivers.conformance import CAP_NET_RAW
from tests.drivers.ocimodel import E, Refused, apply_stack

LONG = os.environ.get("LAMINA_FUZZ") == "long"
EXAMPLES = int(os.environ.get("LAMINA_FUZZ_EXAMPLES", "3000" if LONG else "200"))
SEED = 14
PROFILE_DIGEST = "c6cbeda9da30436e"
"""sha256 (first 16 hex digits) of the bounded profile's 200 stacks, in order (``digest``)."""

# ------------------------------------------------------------------------------------- stacks
NFC = unicodedata.normalize("NFC", "caf\u00e9").encode()
NFD = unicodedata.normalize("NFD", "caf\u00e9").encode()
NAMES = [b"a", b"b", b"c", NFC, NFD, b"\xff\xfe-not-utf8", b"L" * 200]
SHORT = [b"a", b"b", b"c"]
T0 = 1_700_000_000_000_000_000

PATHS = sorted({b"/".join(p) for first in NAMES
                for p in [(first,), *((first, x) for x in SHORT + [NFC, NFD]),
                          *((first, x, y) for x in SHORT for y in SHORT + [NFD])]},
               key=lambda p: (p.count(b"/"), len(p), p))
paths = st.sampled_from(PATHS)  # shortest first: failures shrink to short paths
file_modes = st.sampled_from([0o644, 0o755, 0o600, 0o000, 0o444, 0o4755, 0o2755, 0o6711,
                              0o1644])
dir_modes = st.sampled_from([0o755, 0o700, 0o555, 0o000, 0o1777, 0o2775, 0o3770])
ids = st.sampled_from([0, 0, 1, 1000, 65534, 2**31 - 2])
mtimes = st.sampled_from([T0, T0 + 1, T0 + 999_999_999, T0 - 86_400_000_000_007,
                          T0 + 123_456_789_123_456_789])
xattr = st.sampled_from([(b"user.a", b"1"), (b"user.a", b"2"), (b"user.b", b"\x00\xff"),
                         (b"security.capability", CAP_NET_RAW.encode("latin-1"))])
dir_xattr = st.sampled_from([(b"user.a", b"1"), (b"user.a", b"2"), (b"user.b", b"\x00\xff")])
datas = st.one_of(st.sampled_from([b"", b"x", b"hello\n"]), st.binary(max_size=64),
                  st.just(bytes(range(256)) * 300))
symlink_targets = st.one_of(
    paths, paths.map(lambda p: b"/" + p), paths.map(lambda p: b"../" + p),
    st.sampled_from([b".", b"..", b"/", b"/nowhere/x", b"../../..", b"a/../b", b"./a"]))


def _xattrs(draw: Any, strategy: Any) -> tuple[tuple[bytes, bytes], ...]:
    return tuple(sorted(dict(draw(st.lists(strategy, max_size=2))).items()))


@st.composite
def entries(draw: Any, known: list[bytes]) -> E:
    """One tar entry; ``known`` are paths made so far (hardlink targets are drawn from them)."""
    kind = draw(st.sampled_from(["file"] * 5 + ["dir"] * 4 + ["symlink"] * 3 + ["link"] * 2
                                + ["whiteout"] * 2 + ["opaque", "fifo", "char", "block"]))
    path = draw(paths)
    owner = dict(uid=draw(ids), gid=draw(ids))
    if kind == "file":
        return E("file", path, draw(file_modes), data=draw(datas), mtime=draw(mtimes),
                 xattrs=_xattrs(draw, xattr), **owner)
    if kind == "dir":
        return E("dir", path, draw(dir_modes), xattrs=_xattrs(draw, dir_xattr), **owner)
    if kind == "symlink":
        return E("symlink", path, 0o777, target=draw(symlink_targets), mtime=draw(mtimes),
                 **owner)
    if kind == "link":
        target = draw(st.sampled_from(known)) if known and draw(st.booleans()) else draw(paths)
        return E("link", path, target=target)
    if kind in ("whiteout", "opaque"):
        return E(kind, path)
    if kind == "fifo":
        return E("fifo", path, draw(file_modes), mtime=draw(mtimes), **owner)
    rdev = draw(st.sampled_from([(1, 3), (4, 64), (7, 0), (259, 1)]))
    return E(kind, path, draw(st.sampled_from([0o600, 0o666, 0o4660])), rdev=rdev,
             mtime=draw(mtimes), **owner)


@st.composite
def stacks(draw: Any) -> list[list[E]]:
    """1-6 layers of 1-8 entries. An entry the model refuses (a parent that is a file, a
    symlink loop, a hardlink to nothing) is kept now and then and ends the stack; mostly it is
    dropped, so that most stacks get to their top layer."""
    out: list[list[E]] = []
    known: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        layer: list[E] = []
        for _ in range(draw(st.integers(1, 8))):
            e = draw(entries(known))
            if isinstance(apply_stack([*out, [*layer, e]]), Refused):
                if draw(st.integers(0, 15)) == 0:
                    return [*out, [*layer, e]]
                continue
            layer.append(e)
            if e.kind not in ("whiteout", "opaque", "dir"):
                known.append(e.path)
        if layer:
            out.append(layer)
    return out or [[E("dir", b"a")]]


# ---------------------------------------------------------------------------------- profile
PROFILE = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=False, phases=tuple(Phase),
    report_multiple_bugs=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
    **({} if LONG else {"database": None}))


def fuzz(test: Callable[..., None]) -> Callable[..., None]:
    """``@given(stack=stacks())`` with the profile: in the bounded one also the fixed seed."""
    wrapped = PROFILE(given(stack=stacks())(test))
    return wrapped if LONG else seed(SEED)(wrapped)


@contextlib.contextmanager
def same_stacks_everywhere() -> Iterator[None]:
    """Hypothesis draws with no local-constants pool while this is open (see the module doc).
    These are hypothesis internals: if a version moves them, this fails loudly (the pin in
    pyproject.toml says which version it was written for)."""
    from hypothesis.internal.conjecture import providers

    prop = providers.HypothesisProvider.__dict__.get("_local_constants")
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if not isinstance(prop, functools.cached_property) or cache is None \
            or not hasattr(providers, "Constants"):
        raise RuntimeError("hypothesis no longer has HypothesisProvider._local_constants / "
                           "CONSTANTS_CACHE: tests/drivers/fuzzstacks.py cannot make its draws "
                           "machine-independent; see its module doc")
    empty = providers.Constants()
    cache.cache.clear()  # pools computed earlier in this process hold local constants
    providers.HypothesisProvider._local_constants = property(lambda self: empty)
    try:
        yield
    finally:
        providers.HypothesisProvider._local_constants = prop
        cache.cache.clear()


def digest() -> tuple[int, str]:
    """How many stacks the bounded profile draws, and their digest (as in ``PROFILE_DIGEST``);
    the same draws as the fuzzer's own test as long as every stack passes there."""
    drawn: list[str] = []

    @fuzz
    def record(stack: list[list[E]]) -> None:
        drawn.append(repr(stack))

    with same_stacks_everywhere():
        record()
    return len(drawn), hashlib.sha256("\n".join(drawn).encode()).hexdigest()[:16]


if __name__ == "__main__":  # python -m tests.drivers.fuzzstacks [MODULE...]: print the digest
    import importlib
    import sys

    for name in sys.argv[1:]:
        importlib.import_module(name)
    print(*digest())
