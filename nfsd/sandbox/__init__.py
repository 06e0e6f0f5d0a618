"""Running user transducers isolated from the server: confinement, the worker process, the pool."""
from .confine import Identity, Limits
from .pool import TransducerFailed, WorkerPool

__all__ = ["Identity", "Limits", "TransducerFailed", "WorkerPool"]
