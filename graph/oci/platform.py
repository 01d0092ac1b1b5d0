"""``Platform``: an image's os/architecture/variant as the OCI image-spec writes it, parsed from
``linux/arm64/v8`` and from JSON, normalised as containerd does, and the host's own."""

from __future__ import annotations

import platform as _pyplatform
import re
import sys
from dataclasses import dataclass
from typing import Any

from graph.errors import InvalidInput
from graph.oci.fields import bad, get_str, get_str_list
from graph.oci.strictjson import short as _short

_PLATFORM_PART_RE = re.compile(r"[A-Za-z0-9_.-]+")


_KNOWN_OS = frozenset(
    "aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 "
    "solaris windows zos".split()
)
_KNOWN_ARCH = frozenset(
    "386 amd64 amd64p32 arm armbe arm64 arm64be ppc64 ppc64le loong64 mips mipsle mips64 "
    "mips64le mips64p32 mips64p32le ppc riscv riscv64 s390 s390x sparc sparc64 wasm".split()
)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's normalizeArch: aliases to Go names; the default variants (amd64 v1, arm64
    v8, arm v7) spelled canonically ("" for amd64/arm64, "v7" for arm)."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            return "arm64", ""
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def _normalize_os(os_: str) -> str:
    os_ = os_.lower()
    return "darwin" if os_ == "macos" else os_


@dataclass(frozen=True)
class Platform:
    """An OCI platform: ``os``/``architecture`` with Go's names (``linux``, ``amd64``, ``arm64``),
    an optional CPU ``variant`` (``v7``, ``v8``), and the rarely used ``os.version`` and
    ``os.features``. ``str()`` gives the ``os/arch[/variant]`` specifier."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("os", "architecture"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidInput(f"invalid platform: {name} must be a non-empty string")
        for name in ("variant", "os_version"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise InvalidInput(f"invalid platform: {name} must be a string")
        if self.variant == "":
            object.__setattr__(self, "variant", None)
        if not isinstance(self.os_features, tuple):
            object.__setattr__(self, "os_features", tuple(self.os_features))

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def normalized(self) -> "Platform":
        """containerd's Normalize: ``aarch64`` -> ``arm64``, ``arm64/v8`` -> ``arm64``,
        ``arm`` -> ``arm/v7``, ``macos`` -> ``darwin``; features sorted and deduplicated."""
        arch, variant = _normalize_arch(self.architecture, self.variant or "")
        return Platform(
            _normalize_os(self.os), arch, variant or None, self.os_version, tuple(sorted(set(self.os_features)))
        )

    def key(self) -> tuple[str, str, str]:
        """(os, arch, variant) after normalisation: two platforms are the same iff keys are."""
        n = self.normalized()
        return (n.os, n.architecture, n.variant or "")

    @staticmethod
    def parse(s: str) -> "Platform":
        """Parse a ``--platform`` specifier as containerd does: ``os/arch[/variant]``
        (``linux/amd64``, ``linux/arm64/v8``, ``linux/arm/v7``), or a lone OS (host
        architecture) or lone architecture (host OS). Aliases are resolved (``x86_64`` ->
        ``amd64``, ``aarch64`` -> ``arm64``, ``armhf`` -> ``arm/v7``). Raises ``InvalidInput``."""
        if not isinstance(s, str) or not s or len(s) > 256:
            raise InvalidInput(f"invalid platform {_short(s)}: want os/arch[/variant]")
        parts = s.split("/")
        if len(parts) > 3 or not all(_PLATFORM_PART_RE.fullmatch(p) for p in parts):
            raise InvalidInput(f"invalid platform {_short(s)}: want os/arch[/variant], e.g. linux/arm64/v8")
        if len(parts) == 1:
            os_ = _normalize_os(parts[0])
            if os_ in _KNOWN_OS:
                host = Platform.host()
                return Platform(os_, host.architecture, host.variant)
            arch, variant = _normalize_arch(parts[0], "")
            if arch not in _KNOWN_ARCH:
                raise InvalidInput(f"invalid platform {_short(s)}: unknown operating system or architecture")
            if arch == "arm" and variant == "v7":
                variant = ""
            return Platform(Platform.host().os, arch, variant or None)
        os_ = _normalize_os(parts[0])
        if len(parts) == 2:
            arch, variant = _normalize_arch(parts[1], "")
            if arch == "arm" and variant == "v7":
                variant = ""
            return Platform(os_, arch, variant or None)
        arch, variant = _normalize_arch(parts[1], parts[2])
        if arch == "arm64" and variant == "":
            variant = "v8"
        return Platform(os_, arch, variant or None)

    @staticmethod
    def host() -> "Platform":
        """This machine's platform, from ``platform.machine()`` mapped to Go's names
        (x86_64 -> amd64, aarch64 -> arm64/v8, armv7l -> arm/v7, i686 -> 386, ...). An unknown
        machine name is passed through lower-cased: it then matches nothing, and selection
        fails with a NotFound that names it, rather than picking a wrong image."""
        os_ = "linux" if sys.platform.startswith("linux") else _normalize_os(sys.platform.rstrip("0123456789"))
        m = _pyplatform.machine().lower()
        arch, variant = m, ""
        if m in ("x86_64", "amd64", "x64"):
            arch = "amd64"
        elif m in ("aarch64", "arm64", "aarch64_be"):
            arch, variant = "arm64", "v8"
        elif m.startswith("armv8"):
            arch, variant = "arm", "v8"  # 32-bit userland on an ARMv8 CPU
        elif m.startswith("armv7"):
            arch, variant = "arm", "v7"
        elif m.startswith("armv6"):
            arch, variant = "arm", "v6"
        elif m.startswith("armv5"):
            arch, variant = "arm", "v5"
        elif m in ("i386", "i486", "i586", "i686", "x86"):
            arch = "386"
        elif m == "mips64el":
            arch = "mips64le"
        elif m == "loongarch64":
            arch = "loong64"
        return Platform(os_, arch or "unknown", variant or None)

    @staticmethod
    def from_json(d: Any, what: str = "platform", where: str = "platform") -> "Platform":
        """From an OCI ``platform`` object; ``architecture`` and ``os`` are required."""
        if not isinstance(d, dict):
            raise bad(what, where, "must be an object")
        arch = get_str(d, "architecture", what, where, required=True)
        os_ = get_str(d, "os", what, where, required=True)
        if not arch or not os_:
            raise bad(what, where, "architecture and os must not be empty")
        get_str_list(d, "features", what, where)  # reserved by the spec; type-checked only
        return Platform(
            os=os_,
            architecture=arch,
            variant=get_str(d, "variant", what, where) or None,
            os_version=get_str(d, "os.version", what, where) or None,
            os_features=get_str_list(d, "os.features", what, where),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out
