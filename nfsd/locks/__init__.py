"""Byte-range locks and share reservations for NLM v4, mirrored onto the real files."""
