"""The one clock this package's MLS code may read, injectable everywhere it is used.

KeyPackage lifetimes are wall-clock times (§7.2 Lifetime), so generating and validating them needs
one. Every API takes ``now=`` or ``clock=``; this default exists for callers that pass neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_CLOCK: Callable[[], float] = time.time
"""Wall-clock seconds for KeyPackage lifetimes; the injectable default."""

__all__ = ["DEFAULT_CLOCK"]
