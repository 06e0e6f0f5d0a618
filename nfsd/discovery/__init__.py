"""How clients find the server: registration with the host's rpcbind, or the
embedded portmapper."""
