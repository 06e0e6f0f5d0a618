"""The one kind of error a user fixes by changing how they start pysfsd.

Every check of the command line, the configuration and exports files, the state directory
and the start-up environment (ports, addresses, permissions) raises a subclass of
``ConfigError`` whose message says what went wrong and what to do.  ``nfsd.cli.main.main``
catches it once, for the server and every subcommand, and prints it as one line on stderr
with exit status 2: a traceback is for bugs, not for a port that is taken.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A start-up problem the user can fix; the message is the whole explanation."""
