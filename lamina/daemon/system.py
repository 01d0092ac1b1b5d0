"""System endpoints: ``/_ping``, ``/version``, ``/info``, ``/system/df``."""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lamina.daemon import wire
from lamina.daemon.hostinfo import mem_total

if TYPE_CHECKING:
    from graph import Store
    from lamina.daemon.context import Daemon

GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}


async def ping(d: "Daemon", request: web.Request) -> web.StreamResponse:
    headers = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache",
               "Builder-Version": "1"}
    if request.method == "HEAD":
        return web.Response(status=200, headers={**headers, "Content-Type": "text/plain; charset=utf-8",
                                                 "Content-Length": "0"})
    return web.Response(status=200, text="OK", headers=headers)


def _arch() -> str:
    m = platform.machine()
    return GO_ARCH.get(m, m)


def version_doc() -> dict[str, Any]:
    from lamina import __version__
    from lamina.daemon.context import API_VERSION, MIN_API_VERSION

    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
               "Arch": _arch(), "KernelVersion": platform.release(), "GitCommit": "", "GoVersion": "",
               "BuildTime": "", "Experimental": "false"}
    return {
        "Platform": {"Name": f"lamina {__version__}"},
        "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": f"python {platform.python_version()}",
        "Os": "linux",
        "Arch": _arch(),
        "KernelVersion": platform.release(),
        "BuildTime": "",
    }


async def version(d: "Daemon", request: web.Request) -> web.StreamResponse:
    return wire.json_response(version_doc())


def _os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def info_doc(d: "Daemon", store: "Store") -> dict[str, Any]:
    from lamina import __version__
    from runtime import DEFAULT_RUNTIME, RUNTIMES

    conts = store.containers.list()
    states = [c.state for c in conts]
    status = store.driver.status()
    ids = d.cfg.insecure
    return {
        "ID": d.ident,
        "Containers": len(conts),
        "ContainersRunning": states.count("running"),
        "ContainersPaused": states.count("paused"),
        "ContainersStopped": len(conts) - states.count("running") - states.count("paused"),
        "Images": len(store.images.list()),
        "Driver": store.driver_name,
        "DriverStatus": [[k, str(v)] for k, v in status.items()],
        "Plugins": {"Volume": [], "Network": ["host", "null"], "Authorization": None, "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": False, "KernelMemory": False, "CpuCfsPeriod": True,
        "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": False,
        "BridgeNfIptables": False, "BridgeNfIp6tables": False, "Debug": d.cfg.log_level == "debug",
        "NFd": len(os.listdir("/proc/self/fd")), "OomKillDisable": False, "NGoroutines": 0,
        "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
        "CgroupVersion": "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1",
        "NEventsListener": d.events.listeners, "KernelVersion": platform.release(),
        "OperatingSystem": _os_name(), "OSVersion": "", "OSType": "linux", "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"],
            "IndexConfigs": {h: {"Name": h, "Mirrors": [], "Secure": False, "Official": False} for h in ids},
            "Mirrors": list(d.cfg.mirrors),
        },
        "NCPU": os.cpu_count() or 1, "MemTotal": mem_total(), "GenericResources": None,
        "DockerRootDir": str(store.root), "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "Name": platform.node(), "Labels": [], "ExperimentalBuild": False, "ServerVersion": __version__,
        "Runtimes": {name: {"path": name} for name in RUNTIMES},
        "DefaultRuntime": d.cfg.runtime or DEFAULT_RUNTIME,
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                  "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "",
        "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
        "SecurityOptions": [], "Warnings": [],
    }


async def info(d: "Daemon", request: web.Request) -> web.StreamResponse:
    return wire.json_response(await d.call(lambda s: info_doc(d, s)))


def df_doc(store: "Store") -> dict[str, Any]:
    from lamina.daemon import containers, images

    imgs = images.list_images(store, all_=True, flt={})
    used: dict[str, int] = {}
    for c in store.containers.list():
        if c.image_id:
            used[str(c.image_id)] = used.get(str(c.image_id), 0) + 1
    for i in imgs:
        i["Containers"] = used.get(i["Id"], 0)
    conts = containers.list_containers(store, all_=True, flt={}, size=True)
    return {
        "LayersSize": sum(layer.size for layer in store.layers.list()),
        "Images": imgs,
        "Containers": conts,
        "Volumes": [],
        "BuildCache": [],
    }


async def df(d: "Daemon", request: web.Request) -> web.StreamResponse:
    return wire.json_response(await d.call(df_doc))


ROUTES = [
    ("GET", r"/_ping", ping),
    ("HEAD", r"/_ping", ping),
    ("GET", r"/version", version),
    ("GET", r"/info", info),
    ("GET", r"/system/df", df),
]
