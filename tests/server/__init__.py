"""Tests that start pysfsd (or NFS-Ganesha) and drive it over the network: raw RPC,
libnfs, nfs-rs, rpcinfo."""
