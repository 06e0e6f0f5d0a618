"""ONC RPC, NFSv3, MOUNT v3 and portmap program definitions: pure data and codecs, no I/O."""
