"""Fixtures for the multi-head groundwork (issue 16): a CephFS micro cluster and PostgreSQL,
started by the tests themselves in network namespaces (scripts/cluster/, docs/cluster.rst).

They skip, saying why, without root or without the Debian packages (ceph, ceph-mds,
ceph-fuse, postgresql, iproute2, util-linux; scripts/run-tests.sh installs them) or without
psycopg (the ``cluster`` extra).  The cluster is started once per session (about 7 s here)
and every daemon is killed at the end, also after a failure.  All of it carries the
``cluster`` marker: ``-m "not cluster"`` leaves it out.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from scripts.cluster import ceph as ceph_module
from scripts.cluster import netns, postgres
from scripts.cluster.ceph import CephCluster
from scripts.cluster.netns import Host, Lab
from scripts.cluster.postgres import Postgres

CEPH_HOST_OCTET = 10


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.cluster)


def _need_root_and(tools: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, veth, FUSE)")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {' '.join(missing)} (scripts/run-tests.sh installs them)")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    _need_root_and(list(netns.TOOLS))
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture(scope="session")
def ceph(lab: Lab) -> Iterator[CephCluster]:
    """The session's CephFS cluster, in lab host ``ceph`` (192.0.2.10)."""
    _need_root_and(list(ceph_module.TOOLS))
    host = lab.add("ceph", CEPH_HOST_OCTET)
    with CephCluster.started(host) as cluster:
        yield cluster


@pytest.fixture
def host_factory(lab: Lab, ceph: CephCluster, request: pytest.FixtureRequest) -> Iterator:
    """``make("a")``: a fresh lab host for this test, removed (with its ceph-fuse mounts) at
    its end."""
    made: list[Host] = []

    def make(name: str) -> Host:
        host = lab.add(f"{name}-{request.node.name}"[:40])
        made.append(host)
        return host

    yield make
    for host in reversed(made):
        ceph.unmount(host)
        lab.remove(host)


def _need_postgres() -> None:
    if postgres.bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (Debian postgresql; scripts/run-tests.sh)")
    if os.geteuid() == 0:
        import pwd
        try:
            pwd.getpwnam(postgres.USER)
        except KeyError:
            pytest.skip("no postgres user to run the server as")
        if shutil.which("setpriv") is None:
            pytest.skip("not installed: setpriv (util-linux)")


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    """A PostgreSQL server on a unix socket, as the ``postgres`` user."""
    _need_postgres()
    with Postgres.started() as server:
        yield server


@pytest.fixture
def own_pg() -> Iterator[Postgres]:
    """A PostgreSQL of this test's own, which it stops and starts again."""
    _need_postgres()
    with Postgres.started() as server:
        yield server


@pytest.fixture
def shared_url(pg: Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh database of the session's PostgreSQL for this test (``--shared-state``)."""
    psycopg = pytest.importorskip("psycopg", reason="the cluster extra: pip install -e '.[cluster]'")
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg.url.replace("/postgres?", f"/{name}?")
