"""keepalived (VRRP) in lab hosts: one virtual address that moves between heads.

Each head runs ``keepalived`` in the foreground in its own network namespace, VRRP only,
speaking unicast to the other heads over the lab's bridge (no multicast needed), with its
configuration and pid files in a temporary directory.  The head with the highest priority
holds the address; when its keepalived stops (or its host goes), another takes it over and
announces it with gratuitous ARP.  ``close()`` stops it; it also dies with the caller
(``netns.Host.popen``).  The address must be one of the lab's (e.g. 192.0.2.100).
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from scripts.cluster.netns import Host, stop

CONFIG = """\
global_defs {{
    router_id {name}
    script_user root
    enable_script_security
}}
vrrp_instance heads {{
    state BACKUP
    interface eth0
    virtual_router_id {vrid}
    priority {priority}
    advert_int 1
    unicast_src_ip {src}
    unicast_peer {{
{peers}
    }}
    virtual_ipaddress {{
        {vip}/24 dev eth0
    }}
{notify}}}
"""


class Keepalived:
    """keepalived in ``host``, holding ``vip`` with ``priority`` against ``peers``."""

    def __init__(self, host: Host, vip: str, priority: int, peers: list[Host], vrid: int = 51,
                 notify_master: list[str] | None = None) -> None:
        """``notify_master``: a command keepalived runs when this host becomes MASTER (as it
        takes the address: ``scripts/cluster/fence.py``); its output goes to ``notify.log``."""
        self.host, self.vip = host, vip
        self.dir = Path(tempfile.mkdtemp(prefix=f"pysfsd-vrrp-{host.name}-"))
        conf = self.dir / "keepalived.conf"
        notify = ""
        if notify_master:
            script = self.dir / "notify-master.sh"
            script.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in notify_master)
                              + f" >>{shlex.quote(str(self.dir / 'notify.log'))} 2>&1\n")
            script.chmod(0o700)
            notify = f"    notify_master {script}\n"
        conf.write_text(CONFIG.format(
            name=host.name.replace("-", "_"), vrid=vrid, priority=priority, src=host.address, vip=vip,
            peers="\n".join(f"        {p.address}" for p in peers), notify=notify))
        self._log = (self.dir / "keepalived.log").open("w")
        self.proc = host.popen(["keepalived", "--dont-fork", "--log-console", "--vrrp",
                                "--use-file", str(conf), "--pid", str(self.dir / "keepalived.pid"),
                                "--vrrp_pid", str(self.dir / "vrrp.pid")],
                               stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def holds(self) -> bool:
        """Whether the virtual address is on this host's eth0 now."""
        out = self.host.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
                            capture_output=True, text=True).stdout
        return f" {self.vip}/" in out

    def wait_holds(self, timeout: float = 20.0) -> float:
        """Seconds until this host holds the address."""
        t0 = time.monotonic()
        while not self.holds():
            if self.proc.poll() is not None:
                raise RuntimeError(f"keepalived exited: {(self.dir / 'keepalived.log').read_text()}")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{self.host.name} never took {self.vip}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def close(self) -> None:
        stop(self.proc)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
