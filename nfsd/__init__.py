"""pysfsd: the asyncio NFSv3/MOUNT server, its file-system backend and handle store."""
__version__ = "0.1.0"
