"""XDR (RFC 4506) codec: declarative types compiled to fast pack/unpack functions. No I/O."""
from .types import *  # noqa: F401,F403
from .types import __all__  # noqa: F401
