"""The first hour: start-up problems are one line and a non-zero exit, help and version say
what the command does, the start-up lines say what a user needs to know.

Each test runs ``python -m nfsd`` as a user would.  Problems an ordinary user meets (a port
below 1024, an export or state directory they may not read or write) are reproduced, when
the tests run as root, without the capabilities that override them (``setpriv
--bounding-set``), so the test keeps uid 0 and its interpreter, on directories of another
user's (``foreign``); run by an ordinary user, the tests meet them as they are.  The address the host lacks (192.0.2.1, TEST-NET-1) is only
passed to ``bind``, which fails at once: nothing is sent anywhere.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerProcess, serving

NOT_ROOT_CAPS = "-dac_override,-dac_read_search,-net_bind_service"


def run(*args: str, env: dict[str, str] | None = None, drop_caps: bool = False,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "nfsd", *args]
    if drop_caps and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to act as an ordinary user would")
        cmd = ["setpriv", "--bounding-set", NOT_ROOT_CAPS, "--", *cmd]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL)


def foreign(path: Path, mode: int) -> None:
    """Give ``path`` the rights an ordinary user has on another user's directory of ``mode``:
    as root, make it nobody's; otherwise keep it ours with the 'other' bits everywhere."""
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        path.chmod(mode)
    else:
        other = mode & 0o7
        path.chmod(other | other << 3 | other << 6)


def one_line_failure(proc: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """The run failed with exit status 2 and one line on stderr holding every phrase."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def server_args(tmp_path: Path, *extra: str) -> list[str]:
    export = tmp_path / "export"
    export.mkdir(exist_ok=True)
    return ["--export", str(export), "--bind", "127.0.0.1", "--no-register",
            "--state-dir", str(tmp_path / "state"), *extra]


# -- start-up problems ---------------------------------------------------------------------
def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run(*server_args(tmp_path, "--port", str(port)))
    one_line_failure(proc, f"cannot listen on 127.0.0.1:{port}", "already in use", "--port")


def test_bind_address_the_host_lacks(tmp_path: Path) -> None:
    args = server_args(tmp_path, "--port", "0")
    args[args.index("127.0.0.1")] = "192.0.2.1"
    one_line_failure(run(*args), "cannot listen on 192.0.2.1:0", "no such address", "--bind")


def test_privileged_port_as_an_ordinary_user(tmp_path: Path) -> None:
    proc = run(*server_args(tmp_path, "--port", "999"), drop_caps=True)
    one_line_failure(proc, "127.0.0.1:999", "below 1024 need root")


def test_embedded_portmapper_as_an_ordinary_user(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port below 1024 that nothing holds
        for port in range(990, 1000):
            try:
                probe.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        else:
            pytest.skip("no free port below 1024")
    proc = run(*server_args(tmp_path, "--port", "0", "--portmap", "--portmap-port", str(port)), drop_caps=True)
    one_line_failure(proc, "cannot serve the portmapper (--portmap)", f":{port}", "need root")


def test_port_out_of_range(tmp_path: Path) -> None:
    one_line_failure(run(*server_args(tmp_path, "--port", "70000")), "--port", "70000 is not a port number")


def test_workers_with_shared_state_is_refused(tmp_path: Path) -> None:
    """A cluster head is one process for now: said at once, not a hang or a half start."""
    one_line_failure(run(*server_args(tmp_path, "--workers", "2", "--shared-state", "postgresql:///nowhere")),
                     "--workers", "--shared-state")


def test_shared_state_alone_is_not_refused_for_workers(tmp_path: Path) -> None:
    """The default of ``--workers`` is the usable cores, but a head is one process: without
    ``--workers`` a cluster head starts as one (here it then fails for want of PostgreSQL,
    which is what it must say, not ``--workers``)."""
    proc = run(*server_args(tmp_path, "--shared-state", "postgresql:///nowhere"), env={"PYSFSD_WORKERS": ""})
    assert proc.returncode == 2 and "--shared-state" in proc.stderr, proc.stderr
    assert "--workers" not in proc.stderr, proc.stderr


def test_config_file_port_out_of_range(tmp_path: Path) -> None:
    config = tmp_path / "pysfsd.toml"
    config.write_text("port = 70000\n")
    one_line_failure(run(*server_args(tmp_path, "--config", str(config))), "port", "not a port number")


def test_export_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    proc = run("--export", str(missing), "--port", "0", "--bind", "127.0.0.1", "--state-dir", str(tmp_path / "s"))
    one_line_failure(proc, f"export {missing} does not exist", "mkdir -p")


def test_export_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    proc = run("--export", str(f), "--port", "0", "--bind", "127.0.0.1", "--state-dir", str(tmp_path / "s"))
    one_line_failure(proc, f"export {f} is not a directory")


def test_export_the_server_cannot_read(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    foreign(export, 0o700)
    tmp_path.chmod(0o755)
    proc = run(*server_args(tmp_path, "--port", "0"), drop_caps=True)
    one_line_failure(proc, f"cannot read export {export}", "run the server as a user who may read it")


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    args = server_args(tmp_path, "--port", "0")
    (tmp_path / "state").write_text("not a directory")
    one_line_failure(run(*args), f"state directory {tmp_path / 'state'} is not a directory", "--state-dir")


def test_state_dir_not_writable(tmp_path: Path) -> None:
    args = server_args(tmp_path, "--port", "0")
    state = tmp_path / "state"
    state.mkdir()
    foreign(state, 0o755)
    proc = run(*args, drop_caps=True)
    one_line_failure(proc, "cannot create the state in", "Permission denied", "--state-dir a directory you may write")


def test_unwritable_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    foreign(home, 0o555)
    args = [a for a in server_args(tmp_path, "--port", "0")]
    i = args.index("--state-dir")
    del args[i:i + 2]
    env = {"HOME": str(home)}
    proc = run(*args, env={**env, "XDG_STATE_HOME": ""}, drop_caps=True)
    one_line_failure(proc, str(home / ".local" / "state" / "pysfsd"), "Permission denied",
                     "XDG_STATE_HOME")


def test_second_server_on_the_same_state_is_refused(tmp_path: Path) -> None:
    with serving(tmp_path) as first:
        assert first.proc is not None
        proc = run("--export", str(first.export), "--bind", "127.0.0.1", "--port", "0", "--no-register",
                   "--state-dir", str(first.state_dir))
        line = one_line_failure(proc, f"another pysfsd server (pid {first.proc.pid})", "--state-dir")
        assert str(first.state_dir) in line
        assert first.proc.poll() is None  # the first one serves on


def test_a_server_after_a_killed_one_starts(tmp_path: Path) -> None:
    """The kernel drops the lock of a dead server: kill -9 never leaves the state refused."""
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state").start()
    srv.restart(signal.SIGKILL)
    srv.stop()


def test_errors_of_the_index_commands_are_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("a file")
    (tmp_path / "export").mkdir()
    for command in ("index", "query"):
        extra = ["owner:"] if command == "query" else []
        proc = run(command, "--export", str(tmp_path / "export"), "--state-dir", str(state), *extra)
        one_line_failure(proc, "is not a directory")
    proc = run("query", "--export", str(tmp_path / "nothing"), "owner:")
    one_line_failure(proc, "does not exist")


# -- warnings and notes at start-up ---------------------------------------------------------
def start_and_stop(tmp_path: Path, *export_args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Run a server until its index is ready; (stdout, stderr)."""
    cmd = [sys.executable, "-m", "nfsd", *export_args, "--bind", "127.0.0.1", "--port", "0",
           "--state-dir", str(tmp_path / "state")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out = [proc.stdout.readline(), proc.stdout.readline()]
        assert out[0].startswith("pysfsd: listening on"), (out, proc.stderr.read() if proc.poll() else "")
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=30)
    return "".join(out) + rest, err


def test_space_before_the_parenthesis_is_warned(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    _, err = start_and_stop(tmp_path, "--export", f"{export} * (rw)", "--no-register")
    assert "'* (rw)' is two client specifications" in err, err
    assert "write '*(rw)'" in err
    _, err = start_and_stop(tmp_path, "--export", f"{export} *(rw)", "--no-register")
    assert "client specifications" not in err, err


def test_export_the_squashed_root_cannot_write_is_noted(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the note is about acting as the squashed caller: the server must run as root")
    export = tmp_path / "export"
    export.mkdir(mode=0o755)
    export.chmod(0o755)
    _, err = start_and_stop(tmp_path, "--export", str(export), "--no-register")
    notes = [line for line in err.splitlines() if line.startswith("pysfsd: note:")]
    assert len(notes) == 1, err
    assert "not writable by root on a client, squashed to uid 65534" in notes[0]
    assert f"chmod 1777 {export}" in notes[0]
    export.chmod(0o1777)
    _, err = start_and_stop(tmp_path, "--export", str(export), "--no-register")
    assert "pysfsd: note:" not in err, err
    export.chmod(0o755)
    _, err = start_and_stop(tmp_path, "--export", f"{export} *(rw,no_root_squash,insecure)", "--no-register")
    assert "pysfsd: note:" not in err, err


def test_no_register_is_said_and_nothing_is_registered(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    _, err = start_and_stop(tmp_path, "--export", str(tmp_path / "export"), "--no-register")
    assert "pysfsd: portmapper: not registered (--no-register)" in err, err


def test_the_index_line_is_logged_once(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "a.txt").write_text("hello\n")
    _, err = start_and_stop(tmp_path, "--export", str(export), "--no-register", env={"PYSFSD_TRACE": "1"})
    assert len(re.findall(r"indexed .*export", err)) == 1, err


def test_the_default_is_a_worker_per_usable_core(tmp_path: Path) -> None:
    """No ``--workers`` and no ``PYSFSD_WORKERS``: one worker per core the server may run on
    (one core: one process, without a parent)."""
    export = tmp_path / "export"
    export.mkdir()
    cores = len(os.sched_getaffinity(0))
    _, err = start_and_stop(tmp_path, "--export", str(export), "--no-register", env={"PYSFSD_WORKERS": ""})
    if cores == 1:
        assert "workers: pids" not in err, err
    else:
        m = re.search(r"^pysfsd: (\d+) workers: pids ([\d ]+)", err, re.M)
        assert m is not None, err
        assert int(m.group(1)) == cores and len(m.group(2).split()) == cores, m.group(0)


# -- discoverability -----------------------------------------------------------------------
def test_version() -> None:
    from nfsd import __version__
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"pysfsd {__version__}", proc


def test_help_names_the_commands_and_reads_like_a_man_page() -> None:
    out = run("--help").stdout
    for text in ("pysfsd query", "pysfsd index", "pysfsd check", "examples:", "files:", "see also:",
                 "environment:", "PYSFSD_TRACE", "--no-register", "--idle-timeout", "--config",
                 "--transducer", "--version"):
        assert text in out, text


def test_index_and_query_help_describe_the_command() -> None:
    for command, phrase in (("index", "Build or refresh the semantic index"), ("query", "Print what a query")):
        proc = run(command, "--help")
        assert proc.returncode == 0 and phrase in proc.stdout, proc.stdout


def test_check_help_lists_only_what_check_uses() -> None:
    out = run("check", "--help").stdout
    for used in ("--export", "--exports", "--state-dir", "--config", "--transducer", "--repair"):
        assert used in out, used
    for server_only in ("--port", "--bind", "--threads", "--portmap", "--idle-timeout", "--no-watch"):
        assert server_only not in out, server_only


def test_check_reads_the_servers_config_file(tmp_path: Path) -> None:
    """A server's --config file names settings check does not use: they are skipped."""
    export = tmp_path / "export"
    export.mkdir()
    config = tmp_path / "pysfsd.toml"
    config.write_text(f'export = ["{export}"]\nport = 2049\nthreads = 4\nstate-dir = "{tmp_path / "state"}"\n')
    proc = run("index", "--config", str(config), "--export", str(export))
    assert proc.returncode == 0, proc.stderr
    proc = run("check", "--config", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config.write_text('export = ["/x"]\nno-such-setting = 1\n')
    one_line_failure(run("check", "--config", str(config)), "unknown setting 'no-such-setting'")


def test_every_option_is_documented() -> None:
    """docs/running.rst lists every option the server's parser has."""
    from nfsd.config.options import build_parser
    text = (REPO / "docs" / "running.rst").read_text()
    missing = [s for a in build_parser()._actions for s in a.option_strings
               if s.startswith("--") and a.help != argparse.SUPPRESS and f"``{s}" not in text]
    assert not missing, f"not in docs/running.rst: {missing}"
