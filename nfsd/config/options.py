"""The server's command-line options, shared by ``pysfsd`` and ``pysfsd check``/``index``/``query``.

Apart from ``nfsd.cli.main`` (which runs the commands) so that a command that needs the server's
options, to name the same state and transducers, imports them without importing the
command dispatcher that imports it back (``nfsd.check.checker`` <-> ``nfsd.cli.main`` used to be a cycle).
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, NoReturn

from .. import __version__
from ..app import default_state_dir
from ..fs.idlefd import IDLE_FD_SECONDS
from ..nfs3.dirlist import DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES
from .transducers import add_arguments as add_transducer_arguments
from ..workers import DEFAULT_MAX, MAX_COUNT, cores_default


DESCRIPTION = """\
Serve directories over NFSv3, with virtual directories computed from queries over an index
of their files: a semantic file system.  Ordinary paths behave as the exported directory;
'owner:/smith/ext:/c/' or 'src/:extension=.c/' under the mount point list what matches.

commands:
  pysfsd [OPTIONS] --export DIR          serve DIR over NFSv3 (the options below)
  pysfsd query --export DIR QUERY        print the paths a query matches, without NFS
  pysfsd index --export DIR              build or refresh the index, print its counts
  pysfsd check [--repair] --export DIR   compare the saved state with the files
Each command takes --help.
"""

EPILOG = """\
examples:
  pysfsd --export /srv/data
      serve /srv/data to any client, read-write, root on a client acting as nobody
  pysfsd --export '/srv/data 192.168.1.0/24(rw)' --exports /etc/pysfsd.exports
      exports in the exports(5) syntax (no space before the parenthesis)
  pysfsd --export /tmp/export --port 0 --no-register
      a private instance: a free port, the host's portmapper left alone
  PYSFSD_TRACE=2 pysfsd --export /tmp/export
      trace every call, with the credentials it ran with after squashing
  mount -t nfs -o vers=3,nolock,port=2049,mountport=2049 SERVER:/srv/data /mnt
      mount it without a portmapper

files:
  ~/.local/state/pysfsd   the state (handle table, index); --state-dir, XDG_STATE_HOME
  /run/rpcbind.sock       the host's rpcbind, told our ports unless --no-register
  scripts/systemd/pysfsd.service   a systemd unit (docs/running.rst: Running as a service)

environment:
  PYSFSD_TRACE=N    trace calls on stderr: 1 one line each, 2-9 decoded, 10 with raw bytes
  XDG_STATE_HOME    where the default state directory lives
  PYSFSD_WORKERS=N  the default of --workers (otherwise the usable cores)

exit status:
  0 after SIGINT or SIGTERM; 2 when it cannot start (one line on stderr says why)

see also:
  exports(5), mount.nfs(8), rpcinfo(8), showmount(8); docs/running.rst in the source
"""


class Parser(argparse.ArgumentParser):
    """Errors in one line (what is wrong, where to read more), not usage plus error."""

    #: settings a shared ``--config`` file may hold that this command does not use (the
    #: file is the server's): skipped without complaint, see ``nfsd.config.file``
    other_settings: frozenset[str] = frozenset()

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _number(kind: type, low: float, high: float | None, what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value >= low or (high is not None and value > high):  # NaN too
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    parse.__name__ = what
    return parse


port_number = _number(int, 0, 65535, "a port number (0 to 65535)")
positive_int = _number(int, 1, None, "a whole number from 1 up")
positive_seconds = _number(float, 0.001, None, "a positive number of seconds")


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """What names the exports and their state: the server and ``pysfsd check`` share it, so
    the same command line (or ``--config`` file) finds the same state."""
    g = p.add_argument_group("exports and state")
    g.add_argument("--export", action="append", default=[], metavar="DIR",
                   help="directory to export (repeatable): alone it means 'DIR *(rw,root_squash,insecure)'; "
                        "or a whole exports(5) line, 'DIR CLIENT(OPTIONS)...'")
    g.add_argument("--exports", metavar="FILE",
                   help="exports in the /etc/exports syntax (docs/running.rst: Exports)")
    g.add_argument("--state-dir", default=default_state_dir(), metavar="DIR",
                   help="where the LMDB state lives (default %(default)s)")


def add_general_arguments(p: argparse.ArgumentParser) -> None:
    """The transducers (the server's and check's must agree) and the general options."""
    add_transducer_arguments(p)
    g = p.add_argument_group("general")
    g.add_argument("--config", metavar="FILE",
                   help="read options from a TOML file, one key per long option "
                        "(docs/running.rst: Configuration file)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging (twice: debug)")
    g.add_argument("--version", action="version", version=f"pysfsd {__version__}")


def build_parser(server: bool = True) -> Parser:
    """The server's options; with ``server=False`` only those naming the exports, the state
    and the transducers (``pysfsd check``)."""
    p = Parser(prog="pysfsd", description=DESCRIPTION, epilog=EPILOG if server else None)
    add_common_arguments(p)
    if not server:
        add_general_arguments(p)
        p.other_settings = frozenset(_server_settings() - {a.dest for a in p._actions})
        return p
    g = p.add_argument_group("network and discovery")
    g.add_argument("--bind", default="0.0.0.0", metavar="ADDR",
                   help="address to listen on (default 0.0.0.0: all)")
    g.add_argument("--port", type=port_number, default=2049, metavar="N",
                   help="TCP and UDP port for NFS and MOUNT (default 2049; 0 picks a free one)")
    g.add_argument("--no-register", dest="register", action="store_false",
                   help="do not register with the host's rpcbind (a test or private instance "
                        "must not take over the real server's entries); mount with explicit ports")
    g.add_argument("--portmap", action="store_true",
                   help="when no portmapper runs, serve one (portmap v2 on port 111, TCP and UDP; needs root)")
    g.add_argument("--portmap-port", type=port_number, default=111, metavar="N",
                   help="port of the --portmap portmapper (default 111; for tests)")
    g = p.add_argument_group("the semantic namespace")
    g.add_argument("--results", choices=("links", "files"), default="links",
                   help="value directories hold symlinks to the files (default) or the files themselves")
    g.add_argument("--no-watch", dest="watch", action="store_false",
                   help="do not follow changes made behind the server's back (inotify)")
    g = p.add_argument_group("cluster")
    g.add_argument("--shared-state", metavar="URL",
                   help="PostgreSQL URL (postgresql://host/db): be one head of several over a shared "
                        "file system such as CephFS, sharing handles, verifiers and index changes "
                        "(docs/cluster.rst; needs the cluster extra)")
    g.add_argument("--shared-scan-seconds", type=float, default=30.0, metavar="SECONDS",
                   help="with --shared-state: how often the scanner head (one per cluster) looks for "
                        "changes made outside NFS (default %(default)g; 0: this head never scans)")
    g = p.add_argument_group("threads and connections")
    g.add_argument("--threads", type=positive_int, default=8, metavar="N",
                   help="I/O worker threads (default 8)")
    g.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help=f"server processes sharing the listening sockets, at most {MAX_COUNT} (default: the "
                        f"usable cores up to {DEFAULT_MAX}, here {cores_default()}, or "
                        f"PYSFSD_WORKERS; 1 with --shared-state; "
                        f"docs/running.rst: --workers)")
    g.add_argument("--idle-timeout", type=positive_seconds, default=360.0, metavar="SECONDS",
                   help="close a TCP connection with nothing pending after this long (default 360)")
    g.add_argument("--idle-fd-seconds", type=positive_seconds, default=IDLE_FD_SECONDS, metavar="SECONDS",
                   help="close a file's descriptors once no call used them for one to two times this "
                        "(default %(default)g, as knfsd): a file written through NFS can then be run on "
                        "this host")
    g.add_argument("--stall-timeout", type=positive_seconds, default=120.0, metavar="SECONDS",
                   help="close a TCP connection stuck this long in a partial record or not reading "
                        "its replies (default 120)")
    g = p.add_argument_group("locks (NLM v4 and NSM)")
    g.add_argument("--no-locks", dest="locks", action="store_false",
                   help="do not serve NLM/NSM: clients must then mount with nolock (docs/locks.rst)")
    g.add_argument("--grace-period", type=positive_seconds, default=90.0, metavar="SECONDS",
                   help="after a restart with locks held, grant only their reclaims this long (default 90)")
    g.add_argument("--nsm-name", metavar="NAME",
                   help="the name clients mounted this server by, sent in SM_NOTIFY after a restart "
                        "so they reclaim their locks (default: our address as each client reaches it)")
    g.add_argument("--client-portmap-port", type=port_number, default=111, help=argparse.SUPPRESS)  # tests
    g = p.add_argument_group("caches")
    g.add_argument("--attr-cache-seconds", type=float, default=DEFAULT_MAX_AGE, metavar="SECONDS",
                   help="longest a listed entry's attributes are served from the cache without a change "
                        "event (changes inotify cannot see: default %(default)g; 0 disables the cache)")
    g.add_argument("--attr-cache-mib", type=float, default=DEFAULT_MAX_BYTES / (1 << 20), metavar="MIB",
                   help="memory for cached directory entries (default %(default)g)")
    add_general_arguments(p)
    return p


def _server_settings() -> set[str]:
    return {a.dest for a in build_parser()._actions}
