"""Tests with no server process: modules in-process, and the commands that serve nothing."""
