"""The ``pysfsd`` commands: the server, ``index``/``query``, the tag commands."""
