"""Conversions from engine values to wire structs (one place, used by every encoder)."""

from __future__ import annotations

from msgspec import UNSET, Raw

from .engines.base import ClientInfo, Publication
from .protocol.messages import ClientInfoWire, OptRaw, PublicationWire


def opt_raw(data: bytes | None) -> OptRaw:
    """Raw JSON payload, or UNSET (omitted) when there is none."""
    return Raw(data) if data else UNSET


def client_info_wire(info: ClientInfo) -> ClientInfoWire:
    return ClientInfoWire(
        user=info.user,
        client=info.client,
        conn_info=opt_raw(info.conn_info),
        chan_info=opt_raw(info.chan_info),
    )


def publication_wire(pub: Publication) -> PublicationWire:
    return PublicationWire(
        data=Raw(pub.data) if pub.data or not pub.removed else UNSET,
        info=client_info_wire(pub.info) if pub.info is not None else None,
        offset=pub.offset,
        tags=pub.tags or {},
        time=pub.time,
        key=pub.key,
        removed=pub.removed,
    )
