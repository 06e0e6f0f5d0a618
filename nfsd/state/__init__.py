"""The LMDB state store (handle table, verifiers) and who may use it."""
