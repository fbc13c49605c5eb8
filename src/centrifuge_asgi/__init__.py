"""centrifuge-asgi: Centrifugo-compatible real-time messaging for ASGI applications."""

__version__ = "0.1.0"
