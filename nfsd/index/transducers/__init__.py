"""The transducers: the interface, the built-in ones, user commands and entry
points (run in the sandbox) and the checks of their output."""
