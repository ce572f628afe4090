"""Kiln's compiler: a tagged notebook becomes a versioned DAG, its spec and its code."""

__version__ = "0.1.0"
