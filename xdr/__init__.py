"""XDR (RFC 4506) codec: declarative types compiled to fast pack/unpack functions. No I/O."""
from .types import *  # noqa: F401,F403  (the package re-exports the codec's public names)
from .types import __all__  # noqa: F401  (so that star-imports of xdr see the same list)
