"""nccore.methods: one class per training method, one registry (METHODS).

erm (E.1; coarse-label training is ERM with `coarse: true`), dfr (E.2), change_penalty (E.3),
mas (E.4), side_tuning (E.5), groupdro (E.6), jtt (E.7), transfer (§C few-shot)."""
from .base import METHODS, Method  # noqa: F401
from . import change_penalty, dfr, erm, groupdro, jtt, mas, side_tuning, transfer  # noqa: F401  (they register)
from . import baselines, gc_reg  # noqa: F401,E402  (untrained baseline; transfer + GC regulariser)
