"""The program as a whole: help, usage errors, global options, and how every kind of failure
becomes exactly one line on stderr and an exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.conftest import Lamina, clean_env, lamina_command, run_cmd

COMMANDS = ["load", "save", "images", "tag", "rmi", "inspect", "create", "mount", "umount", "diff",
            "commit", "export", "rm", "ps", "system"]


def test_help_lists_every_command(tmp_path: Path) -> None:
    r = run_cmd(lamina_command() + ["--help"])
    for name in COMMANDS:
        assert f"    {name} " in r.out, name
    assert not (tmp_path / "root").exists()


def test_every_command_has_help() -> None:
    for name in COMMANDS:
        r = run_cmd(lamina_command() + [name, "--help"])
        assert r.out.startswith("usage: lamina " + name), r.out
    for sub in ["df", "prune", "check"]:
        run_cmd(lamina_command() + ["system", sub, "--help"])


def test_help_does_not_create_the_default_root(tmp_path: Path) -> None:
    root = tmp_path / "never"
    run_cmd(lamina_command() + ["--help"], env=clean_env(LAMINA_ROOT=str(root)))
    run_cmd(lamina_command() + ["images", "--help"], env=clean_env(LAMINA_ROOT=str(root)))
    assert not root.exists()


def test_version() -> None:
    r = run_cmd(lamina_command() + ["--version"])
    assert r.out.startswith("lamina ")


def test_usage_errors_are_two_lines_and_exit_125_without_touching_the_store(tmp_path: Path) -> None:
    """Docker's form (issue 19.3): the error, then where help is; exit 125 as docker exits for a
    bad flag or argument, 1 for an unknown command (as ``docker nosuch``)."""
    root = tmp_path / "root"
    cases = [
        (["nosuchcommand"], "lamina", 1), ([], "lamina", 125), (["images", "extra"], "lamina images", 125),
        (["rmi"], "lamina rmi", 125), (["create"], "lamina create", 125), (["system"], "lamina system", 125),
        (["--runtime", "nosuch", "images"], "lamina", 125), (["save", "--format", "zip", "x"], "lamina save", 125),
        (["images", "--format", "xml"], "lamina images", 125),
        (["create", "--pids-limit", "abc", "x"], "lamina create", 125),
    ]
    for args, prog, code in cases:
        r = run_cmd(lamina_command() + ["--root", str(root), *args], expect=code)
        assert len(r.err_lines) == 2, r.err
        assert r.err_lines[0].startswith("lamina: ") and "usage:" not in r.err, r.err
        assert r.err_lines[1] == f"See '{prog} --help'.", r.err
        assert r.out == ""
    assert not root.exists()


def test_root_comes_from_the_environment(tmp_path: Path, archives) -> None:
    root = tmp_path / "envroot"
    env = clean_env(LAMINA_ROOT=str(root), LAMINA_DRIVER="vfs")
    run_cmd(lamina_command() + ["load", "-i", str(archives.oci_dir)], env=env)
    assert (root / "lamina.db").exists()
    assert (root / "driver").read_text().strip() == "vfs"
    r = run_cmd(lamina_command() + ["images", "-q"], env=env)
    assert r.lines == [archives.app.id.removeprefix("sha256:")[:12]]
    # --root wins over the environment
    other = tmp_path / "other"
    r = run_cmd(lamina_command() + ["--root", str(other), "images", "-q"], env=env)
    assert r.out == ""
    assert (other / "lamina.db").exists()


def test_a_root_keeps_its_driver(lamina: Lamina) -> None:
    lamina("images")
    r = run_cmd(lamina_command() + ["--root", str(lamina.root), "--driver", "overlay", "images"], expect=4)
    assert len(r.err_lines) == 1 and "vfs" in r.err and "overlay" in r.err
    # without --driver the root's own driver is used
    run_cmd(lamina_command() + ["--root", str(lamina.root), "images"])


def test_unknown_driver_is_refused_and_does_not_bind_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = run_cmd(lamina_command() + ["--root", str(root), "--driver", "nosuch", "images"], expect=2)
    assert r.err_lines == [r.err_lines[0]] and r.err.startswith("lamina: ") and "nosuch" in r.err
    # the typo did not stick: the root opens with a real driver afterwards
    run_cmd(lamina_command() + ["--root", str(root), "--driver", "vfs", "images"])
    assert (root / "driver").read_text().strip() == "vfs"


def test_runtime_option_is_accepted_and_recorded(loaded: Lamina) -> None:
    r = run_cmd(lamina_command() + ["--root", str(loaded.root), "--runtime", "runc", "create", "app:1.0"])
    cid = r.out.strip()
    import json

    doc = json.loads(loaded("inspect", cid).out)[0]
    assert doc["HostConfig"]["Runtime"] == "runc"


def test_root_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = run_cmd(lamina_command() + ["--root", str(blocker / "root"), "--driver", "vfs", "images"], expect=1)
    assert len(r.err_lines) == 1 and r.err.startswith("lamina: ") and "Traceback" not in r.err


_BOOM = """
import sys
import lamina.cli.images as images
def run(args, store):
    raise ValueError("boom")
images.run = run
from lamina.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_unexpected_error_is_one_line_and_exit_70(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", _BOOM, "--root", str(tmp_path / "r"), "--driver", "vfs", "images"]
    r = run_cmd(cmd, expect=70)
    assert r.err_lines == ["lamina: unexpected error: ValueError: boom (run with --debug for the traceback)"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", _BOOM, "--root", str(tmp_path / "r"), "--driver", "vfs", "--debug", "images"]
    r = run_cmd(cmd, expect=70)
    assert "Traceback (most recent call last)" in r.err
    assert r.err_lines[-1] == "lamina: unexpected error: ValueError: boom"
    # a lamina error with --debug: traceback, then the same one line
    r = run_cmd(lamina_command() + ["--root", str(tmp_path / "r"), "--debug", "rmi", "nosuch"], expect=2)
    assert "Traceback" in r.err and r.err_lines[-1] == "lamina: no such image: nosuch"


def test_ctrl_c_exits_130(lamina: Lamina) -> None:
    """SIGINT while ``system prune`` waits for its answer: exit 130, one line, nothing done."""
    lamina("images")
    cmd = lamina_command() + ["--root", str(lamina.root), "system", "prune"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env())
    try:
        assert p.stderr is not None
        seen = b""
        deadline = time.monotonic() + 60
        while b"[y/N]" not in seen and time.monotonic() < deadline:
            seen += os.read(p.stderr.fileno(), 4096)
        assert b"[y/N]" in seen
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130
    assert (err.decode()).strip().splitlines() == ["lamina: interrupted"]
    assert b"Traceback" not in err
    lamina.check_clean()


def test_broken_pipe_is_quiet(loaded: Lamina) -> None:
    """``lamina export c | head -c 10``: the reader goes away; no traceback, exit 141."""
    loaded("create", "--name", "c", "app:1.0")
    root = Path(loaded("mount", "c").out.strip())
    (root / "big.bin").write_bytes(b"x" * (4 << 20))  # far more than a pipe buffers
    loaded("umount", "c")
    cmd = lamina_command() + ["--root", str(loaded.root), "export", "c"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read()
    p.wait(timeout=60)
    assert b"Traceback" not in err and err == b"", err
    assert p.returncode == 141
    import json

    assert json.loads(loaded("inspect", "c").out)[0]["GraphDriver"]["Data"]["Mounts"] == 0
    loaded.check_clean()


def _help_text(parser: "object") -> str:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    return parser.format_help()


def test_lazy_parser_help_matches_the_full_one() -> None:
    """``COMMAND_TABLE``'s help lines and aliases are what the modules register: ``lamina --help``
    built lazily reads exactly as the parser with every command registered."""
    from lamina.cli.main import build_parser

    assert _help_text(build_parser(["--help"])) == _help_text(build_parser(full=True))


def test_lazy_parser_builds_the_chosen_command_in_full() -> None:
    from lamina.cli.main import COMMAND_TABLE, build_parser

    for argv in (["images", "-q"], ["--root", "/x", "images", "-q"], ["--root=/x", "--debug", "images", "-q"],
                 ["--ro", "/x", "images", "-q"], ["--driver", "vfs", "--runtime", "runc", "images", "-q"]):
        args = build_parser(argv).parse_args(argv)
        assert args.subcommand == "images" and args.quiet and callable(args.run), argv
    for name, aliases, _module, _help in COMMAND_TABLE:
        for word in (name, *aliases):
            sub = next(a for a in build_parser([word])._actions if a.dest == "subcommand")
            assert sub.choices[word].add_help, word  # the chosen command got its real parser


def test_lazy_parser_adds_no_other_command() -> None:
    """``lamina images`` builds one subparser (each ArgumentParser costs at start-up); ``--help``
    and an unknown word get every command."""
    from lamina.cli.main import COMMAND_TABLE, build_parser

    def choices(argv: list[str]) -> set[str]:
        return set(next(a for a in build_parser(argv)._actions if a.dest == "subcommand").choices)

    assert choices(["--root", "/x", "images", "-q"]) == {"images"}
    assert choices(["umount", "c"]) == {"umount", "unmount"}
    every = {w for name, aliases, _m, _h in COMMAND_TABLE for w in (name, *aliases)}
    assert choices(["--help"]) == every and choices(["nosuch"]) == every
