"""The NFSv3 and MOUNT v3 programs: one row per procedure, the handlers (protocol
values in and out), attributes, listings and status codes."""
