"""``pysfsd check [--repair]``: the LMDB state compared with the files."""
