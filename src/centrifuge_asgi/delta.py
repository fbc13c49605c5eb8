"""Fossil delta compression of publications, computed once per publication and protocol.

A subscriber that negotiated ``delta: "fossil"`` gets publications in the *delta form*:

* a full publication whose ``data`` is the payload (in JSON, the payload text as a JSON
  *string*, which is how the SDKs take the base they apply later deltas to), or
* ``delta: true`` and a fossil delta that turns the previous publication's payload
  into this one (in JSON again a JSON string, in Protobuf the bytes).

As in Centrifugo, a delta is only sent when the delta is shorter than the payload, to a
positioned subscription, for a publication the broker passed its predecessor with (a
``delta`` publish into a channel with history). On top of that the subscription
remembers the offset of the payload the client holds (``delta_base``): a delta goes out
only when its predecessor is exactly that one, so a client never gets a delta without
its base (a fresh subscriber, one after a skipped message, one after recovery).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.lowlevel
import msgspec
from msgspec import Raw
from msgspec.structs import replace

from . import fossil
from .protocol.codec import Codec, EncodedOnce
from .protocol.messages import PublicationWire, Push, Reply
from .wire import publication_wire

# The bits of a subscription's flags (``subscriptions.Subscription.flags``) that decide
# how a publication reaches it, read per delivery by the fan-out (``registry.py``) and
# by ``deliver_publication``; here, below both, so that they share one definition.
SUB_POSITIONED = 64  # its stream position is checked (offsets, epoch)
SUB_DELTA = 128  # fossil delta negotiated: publications in the delta form

if TYPE_CHECKING:
    from .engines.base import Publication

__all__ = [
    "FOSSIL",
    "MAX_NEW_BYTES",
    "MAX_PAYLOAD",
    "PublicationPush",
    "delta_chain",
    "patch_for",
]

FOSSIL = "fossil"
MAX_NEW_BYTES = 4096  # bounds the delta search to a few milliseconds (fossil.create_within)
MAX_PAYLOAD = 256 * 1024  # larger payloads go whole: indexing them alone takes ~10 ms
_CHAIN_SLICE = 256 * 1024  # payload bytes diffed in a recovery between two checkpoints
_NO_PATCH = b""


def patch_for(prev: bytes, data: bytes) -> bytes:
    """The fossil delta from ``prev`` to ``data``; empty when it would not be shorter, or
    would carry more than ``MAX_NEW_BYTES`` bytes that ``prev`` does not have (then the
    search stops early: the payloads are not similar enough to be worth it), or when
    either payload is larger than ``MAX_PAYLOAD`` (indexing it would take too long)."""
    if len(prev) > MAX_PAYLOAD or len(data) > MAX_PAYLOAD:
        return _NO_PATCH
    patch = fossil.create_within(prev, data, MAX_NEW_BYTES)
    return patch if patch is not None and len(patch) < len(data) else _NO_PATCH


def _json_string(data: bytes) -> Raw:
    """``data`` as a JSON string literal; unchanged (so refused for JSON clients, like
    any binary payload) when it is not UTF-8."""
    try:
        return Raw(msgspec.json.encode(data.decode("utf-8")))
    except UnicodeDecodeError:
        return Raw(data)


def _form(wire: PublicationWire, data: bytes, *, json: bool, is_delta: bool) -> PublicationWire:
    raw = _json_string(data) if json else Raw(data)
    return replace(wire, data=raw, delta=is_delta)


class PublicationPush(EncodedOnce):
    """The push of one publication: its plain encoding (:class:`EncodedOnce`) plus the
    two delta forms, each built at most once per protocol, for every subscriber."""

    __slots__ = ("_forms", "_patch", "_prev_offset", "channel", "prev", "pub")

    def __init__(self, channel: str, pub: Publication, prev: Publication | None = None) -> None:
        super().__init__(Reply(push=Push(channel=channel, pub=publication_wire(pub))))
        self.channel = channel
        self.pub = pub
        self.prev = prev
        self._prev_offset = -1 if prev is None else prev.offset
        self._patch: bytes | None = None
        # (codec name, delta?) -> the delta form; made on first use (most channels have no
        # delta subscriber, and the plain encoding is all they need)
        self._forms: dict[tuple[str, bool], bytes] | None = None

    def patch(self) -> bytes:
        """The delta against ``prev`` (computed once); empty when there is none to send."""
        if self._patch is None:
            prev = self.prev
            self._patch = _NO_PATCH if prev is None else patch_for(prev.data, self.pub.data)
        return self._patch

    def delta_form(self, codec: Codec, base: int) -> bytes:
        """The encoding for a delta subscriber whose client holds the payload of offset
        ``base`` (0 when none): a delta when this publication follows exactly that one."""
        forms = self._forms
        if forms is None:
            forms = self._forms = {}
        key = (codec.name, base > 0 and base == self._prev_offset)
        data = forms.get(key)
        if data is None:
            data = forms[key] = self._encode(codec, use_patch=key[1])
        return data

    def map_delta_form(self, codec: Codec) -> bytes:
        """The encoding for a delta subscriber of a map channel: deltas are per key, and
        ``prev`` (the key's previous value, passed only by a ``delta`` map publish) is
        what every live subscriber holds, so a delta whenever there is one. A removal
        carries the payload ``null`` (in JSON as a string, which the SDK parses)."""
        forms = self._forms
        if forms is None:
            forms = self._forms = {}
        key = (codec.name, self.prev is not None)
        data = forms.get(key)
        if data is None:
            if self.pub.removed:
                data = self._removal(codec)
            else:
                data = self._encode(codec, use_patch=key[1])
            forms[key] = data
        return data

    def _removal(self, codec: Codec) -> bytes:
        if codec.name != "json":
            return self.get(codec)
        push = self.reply.push
        assert push is not None and push.pub is not None
        pub = _form(push.pub, b"null", json=True, is_delta=False)
        return EncodedOnce(Reply(push=replace(push, pub=pub))).get(codec)

    def _encode(self, codec: Codec, *, use_patch: bool) -> bytes:
        json = codec.name == "json"
        patch = self.patch() if use_patch else _NO_PATCH
        # in JSON a delta travels as a string: one whose copy split a multi-byte character
        # is no UTF-8, and then the full payload goes instead
        if json and patch and not _is_utf8(patch):
            patch = _NO_PATCH
        if not patch and not json:
            return self.get(codec)  # in Protobuf the full form is the plain one
        push = self.reply.push
        assert push is not None and push.pub is not None
        pub = _form(push.pub, patch or self.pub.data, json=json, is_delta=bool(patch))
        return EncodedOnce(Reply(push=replace(push, pub=pub))).get(codec)


async def delta_chain(pubs: list[Publication], *, json: bool) -> tuple[list[PublicationWire], int]:
    """Recovered publications for a delta subscriber: the first one full, each next one a
    delta against the one before it (full when the delta would not be shorter); and the
    offset of the payload the client holds afterwards (its ``delta_base``, 0 if none).

    A long recovery of large payloads is many deltas: the loop lets other tasks run
    after every ``_CHAIN_SLICE`` bytes of payload."""
    out: list[PublicationWire] = []
    prev: Publication | None = None
    done = 0
    for pub in pubs:
        done += len(pub.data)
        if done > _CHAIN_SLICE:
            done = 0
            await anyio.lowlevel.checkpoint()
        wire = publication_wire(pub)
        patch = _NO_PATCH if prev is None else patch_for(prev.data, pub.data)
        if json and patch and not _is_utf8(patch):
            patch = _NO_PATCH
        body = patch or pub.data
        if json or patch:
            wire = _form(wire, body, json=json, is_delta=bool(patch))
        out.append(wire)
        # a payload a JSON client cannot receive is left out: the next one goes full
        prev = None if json and not _is_utf8(pub.data) else pub
    return out, 0 if prev is None else prev.offset


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
