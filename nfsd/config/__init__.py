"""How the server is configured: options, the TOML file, start-up checks, the
transducer options, and the one error a user fixes by changing them."""
