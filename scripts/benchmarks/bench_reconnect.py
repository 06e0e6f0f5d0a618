"""Which worker serves a lone client's connection opened right after it closed the last one
(a re-mount, a kernel client reconnecting); trees side by side; not a test.

    python scripts/benchmarks/bench_reconnect.py --tree base=/tmp/base --tree new=. \\
        [--rounds 3] [--reconnects 30] [--gap 0]

Per round and tree (the trees' order reversed every other round): start ``python -m nfsd``
from the tree with ``--workers 2`` on an empty export, open a connection and call NULL, then
``--reconnects`` times: close it, wait ``--gap`` seconds, open another and call NULL, and
ask /proc which process holds the server's end (``procfs.connection_holder``).  Prints per tree and round how many
landed on the follower (nfsd/workers.py ``BalancedAcceptor``: a lone client belongs on the
primary, where its calls cost least).  Found by the nineteenth pass (docs/design.rst, "A
kernel client reconnecting at once").
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "load_generator"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
from bench_scan_memory import children  # noqa: E402
from procfs import connection_holder  # noqa: E402
from servers import Pysfsd, from_tree  # noqa: E402

from nfsd.rpc.client import RpcClient  # noqa: E402
from protocol import nfs3  # noqa: E402


def one_round(port: int, workers: list[int], reconnects: int, gap: float) -> int:
    """How many of ``reconnects`` immediate re-connections the follower served."""
    on_follower = 0
    client = RpcClient(port)
    client.call(nfs3.NFS3, 0, None)
    for _ in range(reconnects):
        client.close()
        time.sleep(gap)
        client = RpcClient(port)
        client.call(nfs3.NFS3, 0, None)
        time.sleep(0.05)  # (the server's end is set up)
        on_follower += connection_holder(port, client.sock.getsockname()[1], workers) == workers[1]
        time.sleep(0.2)  # (the client idles between two re-connections)
    client.close()
    return on_follower


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=PATH",
                    help="a source tree to run the server from (repeat: base and new)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reconnects", type=int, default=30)
    ap.add_argument("--gap", type=float, default=0.0, help="seconds between a close and the next connect")
    args = ap.parse_args()
    trees = [(n, Path(p).resolve()) for n, _, p in (t.partition("=") for t in args.tree)]
    found: dict[str, list[int]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as scratch:
        root = Path(scratch)
        (root / "export").mkdir()
        for i in range(args.rounds):
            for name, tree in (trees if i % 2 == 0 else trees[::-1]):
                with from_tree(tree), Pysfsd(root / "export", root / f"{name}-run", workers=2) as server:
                    assert server.pid is not None
                    found[name].append(one_round(server.port, children(server.pid), args.reconnects, args.gap))
                print(f"round {i + 1} {name}: {found[name][-1]} of {args.reconnects} on the follower",
                      file=sys.stderr)
    for name, counts in found.items():
        print(f"{name}: on the follower {sum(counts)} of {args.reconnects * len(counts)} "
              f"re-connections after {args.gap:g} s (per round {counts})")


if __name__ == "__main__":
    main()
