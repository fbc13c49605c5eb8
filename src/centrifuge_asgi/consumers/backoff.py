"""Retry delays of the consumers: Centrifugo's doubling from 10 ms with jitter, capped."""

from __future__ import annotations

import random
from typing import Final

MIN_DELAY: Final = 0.010
MAX_DELAY: Final = 5.0


def next_delay(retries: int) -> float:
    """The delay before retry number ``retries`` (1, 2, …): at most :data:`MAX_DELAY`."""
    jitter = random.random() * MIN_DELAY  # a jitter, not a secret
    return min((MIN_DELAY + jitter) * (1 << min(retries, 16)), MAX_DELAY)
