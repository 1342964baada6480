"""nccore.methods: one class per training method, one registry (METHODS)."""
from .base import METHODS, Method  # noqa: F401
from . import erm  # noqa: F401  (registers)
