"""Exports: the rules as written (exports(5)) and the guard that applies them to
every call."""
