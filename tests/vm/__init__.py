"""Tests through the Linux kernel NFS client, in the project's qemu VM."""
