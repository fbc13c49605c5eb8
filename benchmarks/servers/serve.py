"""Start one benchmark peer on 127.0.0.1, under the uvicorn settings every peer shares.

    python benchmarks/servers/serve.py --peer centrifuge --port 8801
    python benchmarks/servers/serve.py --peer centrifuge --broker redis --probe

The uvloop floor has no ASGI layer and runs its own uvloop server instead of uvicorn.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
from typing import Any

PEERS = {
    "centrifuge": "peer_centrifuge",
    "socketio": "peer_socketio",
    "channels": "peer_channels",
    "asgi-floor": "peer_asgi_floor",
    "uvloop-floor": None,
}


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (higher when allowed); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (max(hard, 65536), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            continue
    return soft


def uvicorn_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The one set of uvicorn options used for every peer (only ``ws*`` vary, by flag)."""
    return {
        "host": "127.0.0.1",
        "port": args.port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": args.ws,
        "ws_per_message_deflate": args.deflate,
        "ws_ping_interval": args.ws_ping_interval,
        "ws_ping_timeout": args.ws_ping_interval,
        "lifespan": "auto",
        "log_level": "warning",
        "access_log": False,
        "backlog": 4096,
    }


def _interval(value: str) -> float | None:
    return None if value.lower() in ("none", "0", "off") else float(value)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--peer", choices=sorted(PEERS), required=True)
    p.add_argument("--port", type=int, default=8800)
    p.add_argument("--ws", default="websockets-sansio")
    p.add_argument("--deflate", action="store_true", help="allow permessage-deflate")
    p.add_argument("--ws-ping-interval", type=_interval, default=20.0)
    p.add_argument(
        "--client-ping-interval",
        type=float,
        help="centrifuge-asgi's client.ping_interval in seconds (default: the library's)",
    )
    p.add_argument("--broker", choices=["memory", "redis"], default="memory")
    p.add_argument("--redis-prefix", default="bench")
    p.add_argument("--probe", action="store_true", help="exit 0 if servable, 3 if not")
    p.add_argument("--tracemalloc", metavar="PREFIX", help="see memtrace.py")
    p.add_argument("--gc-stats", metavar="PREFIX", help="see gcstats.py")
    p.add_argument(
        "--what-if", default="", help="comma-separated what_if.py patches (centrifuge only)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    raise_nofile()
    if args.tracemalloc:
        import memtrace

        memtrace.start(args.tracemalloc)
    if args.gc_stats:
        import gcstats

        gcstats.start(args.gc_stats)
    module_name = PEERS[args.peer]
    if module_name is None:
        if args.probe:
            return 0 if args.broker == "memory" else 3
        from uvloop_floor import serve

        serve(args.port)
        return 0
    module = importlib.import_module(module_name)
    if args.what_if:
        import what_if

        wanted = args.what_if.split(",")
        applied = what_if.apply(wanted)
        if sorted(applied) != sorted(wanted):
            print(f"what-if not applicable to this tree: {sorted(set(wanted) - set(applied))}")
            return 4
    if args.probe:
        why = module.available(args)
        if why:
            print(why)
            return 3
        return 0
    import uvicorn

    app = module.build_app(args)
    uvicorn.Server(uvicorn.Config(app, **uvicorn_settings(args))).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
