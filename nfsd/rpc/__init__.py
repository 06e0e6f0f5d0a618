"""The generic ONC RPC core: transports, dispatch, the call context, the duplicate
request cache, tracing, and the clients tests and scripts share.  It knows no
particular program."""
