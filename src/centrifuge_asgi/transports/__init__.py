"""Transports move bytes between sockets and sessions; they hold no protocol state."""
