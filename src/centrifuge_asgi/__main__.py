"""``python -m centrifuge_asgi``: the command line."""

from .cli import main

raise SystemExit(main())
