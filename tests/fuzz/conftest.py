"""Hypothesis profiles of the fuzz tests (docs/security.md, "Fuzzing").

``HYPOTHESIS_PROFILE`` picks one: ``ci`` (the default under ``CI=true``: derandomized,
no example database, so every CI run tries the same inputs), ``dev`` (the default
otherwise: random, remembers failing examples in ``.hypothesis/``) or ``long`` (many
more examples, for a run of minutes or hours). Each test asks for a share of the
profile's budget with :func:`~.support.examples`, so the slow ones (a whole session or
an HTTP request per example) run fewer. The long run::

    HYPOTHESIS_PROFILE=long .venv/bin/pytest -p no:cacheprovider tests/fuzz
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # two shared cores: timing is no property; hangs are checked apart
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=300, derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", max_examples=300, **_COMMON)
settings.register_profile("long", max_examples=30_000, **_COMMON)

_default = "ci" if os.environ.get("CI") == "true" else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or _default)
