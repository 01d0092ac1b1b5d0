"""Graphdrivers by name: the registry, the support probes and the default choice.

A driver is a class implementing ``drivers.base.Driver`` (``GraphDriver`` + ``DiffDriver``) in its own module, plus a module
function ``supported(home: Path) -> str | None`` (None: usable here; else the reason, one line).
Registering one is one line in ``DRIVERS``; its module is imported only when that driver is
probed or opened, so ``import drivers`` stays cheap (the CLI imports it on every start).

Use::

    import drivers
    d = drivers.open_driver("overlay", home)          # Unsupported(reason) if it cannot run here
    drivers.available(home)                            # {"vfs": None, "btrfs": "<why not>", ...}
    drivers.default_driver(home)                       # "overlay" (or "btrfs" on btrfs, else "vfs")
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from drivers.errors import NotFound, Unsupported
from drivers.sys.record import Frozen

if TYPE_CHECKING:
    from drivers.base import Driver


class DriverInfo(Frozen):
    """Where a driver lives: ``module`` (imported lazily), its class and its probe function."""

    __slots__ = ("module", "cls", "probe")
    _defaults = {"probe": "supported"}
    module: str
    cls: str
    probe: str

    def load(self) -> Any:
        return importlib.import_module(self.module)

    def factory(self) -> Callable[..., "Driver"]:
        """The driver class; called as ``cls(home, **options)``."""
        return getattr(self.load(), self.cls)  # type: ignore[no-any-return]

    def supported(self, home: Path) -> str | None:
        """The probe's verdict; a probe that cannot even be imported or run says why."""
        try:
            probe = getattr(self.load(), self.probe)
        except (ImportError, AttributeError) as e:
            return f"driver module {self.module} unusable: {e}"
        try:
            reason: str | None = probe(Path(home))
        except Exception as e:  # a probe must not break the listing of the others
            return f"support probe of {self.module} failed: {type(e).__name__}: {e}"
        return reason


# The table. Add a driver here (and nowhere else) once its module passes the conformance suite
# (tests/drivers/conformance.py); keep the name as the CLI spells it (--driver NAME).
DRIVERS: dict[str, DriverInfo] = {
    "vfs": DriverInfo("drivers.vfs", "VfsDriver"),
    "overlay": DriverInfo("drivers.overlay", "OverlayDriver"),
    "btrfs": DriverInfo("drivers.btrfs", "BtrfsDriver"),
    "fuse": DriverInfo("drivers.fuse", "FuseDriver"),
}

# Preference when the user names none (moby's priority list): the kernel's overlay first, the
# copy driver last. A home on btrfs gets btrfs first (snapshots are cheaper than overlay there,
# and overlay refuses some btrfs setups as upper dir).
PRIORITY: list[str] = ["overlay", "fuse", "vfs"]
PRIORITY_ON_BTRFS: list[str] = ["btrfs", "overlay", "fuse", "vfs"]


def names() -> list[str]:
    """Registered driver names, in table order."""
    return list(DRIVERS)


def _info(name: str) -> DriverInfo:
    try:
        return DRIVERS[name]
    except KeyError:
        raise NotFound(f"unknown graph driver: {name!r} (known: {', '.join(DRIVERS)})") from None


def supported(name: str, home: Path) -> str | None:
    """None if driver ``name`` can run with ``home``, else the reason. Raises NotFound."""
    return _info(name).supported(Path(home))


def open_driver(name: str, home: Path | str, **options: Any) -> "Driver":
    """Open driver ``name`` with its data in ``home`` (created if missing).

    A driver without the ``DiffDriver`` half comes back wrapped in ``naive_diff.NaiveDiff``.
    Raises NotFound (no such driver), Unsupported (its probe's reason).
    """
    info = _info(name)
    home = Path(home)
    reason = info.supported(home)
    if reason is not None:
        raise Unsupported(f"graph driver {name} cannot run here: {reason}")
    driver = info.factory()(home, **options)
    from drivers.base import DiffDriver

    if not isinstance(driver, DiffDriver):  # only the layer half: diff by comparing trees
        from drivers.naive_diff import NaiveDiff

        return NaiveDiff(driver)  # type: ignore[return-value]
    return driver


def available(home: Path | str) -> dict[str, str | None]:
    """Every registered driver -> None if usable with ``home``, else the reason."""
    return {name: info.supported(Path(home)) for name, info in DRIVERS.items()}


def default_driver(home: Path | str, *, per_driver: bool = False) -> str:
    """The first usable driver of the priority list (``PRIORITY_ON_BTRFS`` when ``home`` is on
    btrfs). With ``per_driver``, ``home`` is the parent of the drivers' homes (a store's
    ``drivers/``) and each is probed at ``home/<name>``, where it would live. Raises Unsupported
    if none is usable (vfs practically always is)."""
    home = Path(home)
    order = PRIORITY_ON_BTRFS if _backing_fs(home) == "btrfs" else PRIORITY
    reasons = []
    for name in order:
        if name not in DRIVERS:
            continue
        reason = DRIVERS[name].supported(home / name if per_driver else home)
        if reason is None:
            return name
        reasons.append(f"{name}: {reason}")
    raise Unsupported("no graph driver can run here: " + "; ".join(reasons))


def _backing_fs(home: Path) -> str:
    from drivers.sys import mount as mountapi

    p = home
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return mountapi.fstype_of(os.fspath(p))
    except OSError:
        return ""


__all__ = ["DRIVERS", "PRIORITY", "PRIORITY_ON_BTRFS", "DriverInfo", "available",
           "default_driver", "names", "open_driver", "supported"]
