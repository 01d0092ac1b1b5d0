"""The per-mount helper process of the fuse driver: ``python -m drivers.fuse.helper ...``.

One helper serves one mount (``drivers.fuse.unionfs.UnionFS``) for as long as it is mounted, so
a container's rootfs outlives the CLI call that mounted it. The driver starts it and waits for
its word on the ready pipe; the helper detaches itself first (forks, the parent exits at once, the
child starts a new session), so it is nobody's child to reap but init's.

Protocol on ``--ready-fd`` (one line each, then the pipe is closed):

    pid <pid>          right after detaching (before anything can fail)
    ready              the mount exists and the request loop is starting
    error <message>    it failed before being ready (it exits 1; details in its stderr)

``--pid-file`` gets ``<pid> <starttime>`` (starttime from /proc/self/stat, so a stale file never
names a recycled pid); the helper removes it when it ends. It ends when the filesystem is
unmounted (``umount``, ``fusermount3 -u``, or a lazy detach whose last user went away).

Usage::

    python -m drivers.fuse.helper --mountpoint M [--upper U --work W] --lower L1 --lower L2 ...
           [--name lamina:<id>] [--option allow_other ...] [--oci-whiteouts] [--pid-file F]
           [--ready-fd N] [--foreground] [--debug]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from drivers.sys.proc import start_time


def _say(fd: int, line: str) -> None:
    """One line to the driver. Raises OSError (EPIPE) when the driver stopped listening: it gave
    up on this helper (or died), so nobody will use or unmount what we would mount."""
    if fd >= 0:
        os.write(fd, line.encode("utf-8", "replace") + b"\n")


def _write_pid_file(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()} {start_time()}\n")
    os.replace(tmp, path)


def _remove_pid_file(path: str) -> None:
    try:
        with open(path) as f:
            if f.read().split()[:1] != [str(os.getpid())]:
                return  # a newer helper of the same layer owns it now
        os.unlink(path)
    except (OSError, IndexError):
        pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m drivers.fuse.helper",
                                description="Serve one lamina fuse union mount.")
    p.add_argument("--mountpoint", required=True)
    p.add_argument("--lower", action="append", default=[], help="a lower dir, topmost first")
    p.add_argument("--upper", help="the upper (container layer's diff) dir; none: read-only")
    p.add_argument("--work", help="staging dir on the upper's filesystem (needed with --upper)")
    p.add_argument("--name", default="lamina", help="fsname shown in the mount table")
    p.add_argument("--option", action="append", default=[], help="a FUSE mount option")
    p.add_argument("--oci-whiteouts", action="store_true",
                   help="lowers may also hold OCI whiteout files (.wh.<name>, .wh..wh..opq)")
    p.add_argument("--pid-file")
    p.add_argument("--ready-fd", type=int, default=-1)
    p.add_argument("--foreground", action="store_true", help="do not detach")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    if args.upper and not args.work:
        p.error("--upper needs --work")
    if not args.upper and not args.lower:
        p.error("no layers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.foreground:
        if os.fork() > 0:
            os._exit(0)  # the driver's child ends at once; the helper is init's now
        os.setsid()
    os.umask(0)  # modes come from the kernel's request (umask already applied there)
    os.chdir("/")
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.debug else logging.WARNING,
                        format=f"%(asctime)s fuse-helper[{os.getpid()}] %(levelname)s %(message)s")
    fd = args.ready_fd
    try:
        _say(fd, f"pid {os.getpid()}")
    except OSError:
        os._exit(1)  # the driver is gone already
    try:
        if args.pid_file:
            _write_pid_file(args.pid_file)
        from drivers.fuse.session import serve
        from drivers.fuse.unionfs import UnionFS

        fs = UnionFS(args.lower, args.upper, args.work, oci_whiteouts=args.oci_whiteouts)
        options = {f"fsname={args.name}", "subtype=lamina", *args.option}
        if not args.upper:
            options.add("ro")

        def ready() -> None:
            nonlocal fd
            _say(fd, "ready")
            if fd >= 0:
                os.close(fd)
                fd = -1

        serve(fs, args.mountpoint, options, on_ready=ready)
    except BaseException as e:
        logging.getLogger("lamina.fuse").exception("helper failed")
        try:
            _say(fd, f"error {type(e).__name__}: {e}".replace("\n", " "))
        except OSError:
            pass
        if args.pid_file:
            _remove_pid_file(args.pid_file)
        sys.stderr.flush()
        os._exit(1)
    if args.pid_file:
        _remove_pid_file(args.pid_file)
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: nothing left to flush, and it is slow


if __name__ == "__main__":
    main()
