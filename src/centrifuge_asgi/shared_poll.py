"""Shared poll subscriptions (Centrifugo v6.8+, experimental upstream).

Clients subscribe to a channel of a ``subscription_type: shared_poll`` namespace, then
*track* keys with batches signed by the application (HMAC, :func:`verify_signature`).
The node polls the application's backend (the ``shared_poll_refresh`` proxy or the
``node.on_shared_poll_refresh`` handler) once per key per ``refresh_interval`` for all
the connections tracking that key, and pushes to each connection the keys whose
version it does not have yet:

* ``versionless`` (default): a change of the data's SHA-256 bumps a node-local
  synthetic version; the channel's epoch (in the subscribe reply) is random per channel
  state, so a client coming back after the state was rebuilt resets its versions.
* ``versioned``: the backend's versions decide; ``shared_poll_publish`` pushes a newer
  version at once and the next poll skips that key. A change of the publisher's
  ``epoch`` wipes the versions and unsubscribes every subscriber (insufficient state).

One :class:`SharedPollChannel` per active channel holds the keys, their trackers and
one polling task owned by the node's task group; it ends ``channel_shutdown_delay``
after the last subscriber left. Backend calls over all channels are bounded by
``shared_poll.concurrency_limit``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import msgspec

from .auth import hmac_sha256_hex
from .codes import ErrorCode
from .delta import patch_for
from .errors import ClientError
from .handlers import SharedPollItem, SharedPollRefreshEvent, SharedPollRefreshReply
from .payload import to_payload
from .protocol.codec import EncodedOnce
from .protocol.messages import (
    PublicationWire,
    Push,
    Reply,
    SubRefreshRequest,
    SubRefreshResult,
    TrackBatch,
)

if TYPE_CHECKING:
    from .config import Config, SharedPollConfig, SharedPollOptions
    from .handlers import Handlers
    from .observer import NodeObserver
    from .protocol.codec import Codec

log = logging.getLogger("centrifuge_asgi.shared_poll")

GRACE_SECONDS = 5  # a signature expired less than this long ago still verifies
CALL_BOUND = 10.0  # a refresh call may take the refresh interval, or this when longer
TRACK, UNTRACK = 1, 2  # SubRefreshRequest.type


# ------------------------------------------------------------------------- signatures


def _keys_hash(keys: Iterable[str]) -> str:
    return hashlib.sha256("\x00".join(keys).encode()).hexdigest()


def _mac(secret: str, iat: str, exp: str, user: str, channel: str, keys: list[str]) -> str:
    return hmac_sha256_hex(secret, "\x00".join((iat, exp, user, channel, _keys_hash(keys))))


def make_signature(
    secret: str, user: str, channel: str, keys: list[str], ttl: int = 0, now: int | None = None
) -> str:
    """Sign ``keys`` (in this order) for ``user`` on ``channel``: ``iat:exp:hmac_hex``.

    ``ttl`` 0 means no expiry (``exp`` 0). What the application's backend does for its
    clients' ``getSignature`` callback (Centrifugo's format, usable in tests and apps).
    """
    iat = int(time.time()) if now is None else now
    exp = iat + ttl if ttl > 0 else 0
    return f"{iat}:{exp}:{_mac(secret, str(iat), str(exp), user, channel, keys)}"


def signature_times(signature: str) -> tuple[int, int]:
    """``(iat, exp)`` of a signature; ``(0, 0)`` when it is malformed."""
    parts = signature.split(":", 2)
    if len(parts) != 3:
        return 0, 0
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return 0, 0


def verify_signature(secret: str, user: str, channel: str, keys: list[str], sig: str) -> bool:
    """Whether ``sig`` signs exactly ``keys`` (in order) for ``user`` on ``channel``."""
    parts = sig.split(":", 2)
    if len(parts) != 3 or not secret:
        return False
    iat, exp, mac = parts
    return hmac.compare_digest(mac.encode(), _mac(secret, iat, exp, user, channel, keys).encode())


def check_batch(cfg: SharedPollConfig, user: str, channel: str, batch: TrackBatch) -> int:
    """Verify one signed batch as Centrifugo does; return its ``exp`` (0: none).

    Raises 103 for a bad signature (or one issued with the previous key after
    ``hmac_previous_secret_key_valid_until``) and 109 when it expired more than
    :data:`GRACE_SECONDS` ago.
    """
    keys = [item.key for item in batch.items]
    sig = batch.signature
    ok = verify_signature(cfg.hmac_secret_key, user, channel, keys, sig)
    if not ok and cfg.hmac_previous_secret_key:
        iat, _ = signature_times(sig)
        until = cfg.hmac_previous_secret_key_valid_until
        if until > 0 and iat > until:
            raise ClientError.of(ErrorCode.PERMISSION_DENIED)
        ok = verify_signature(cfg.hmac_previous_secret_key, user, channel, keys, sig)
    if not ok:
        raise ClientError.of(ErrorCode.PERMISSION_DENIED)
    _, exp = signature_times(sig)
    if exp > 0 and exp + GRACE_SECONDS < time.time():
        raise ClientError.of(ErrorCode.TOKEN_EXPIRED)
    return exp


# ---------------------------------------------------------------------------- state


class PollHost(Protocol):
    """What the manager needs of the node."""

    config: Config
    handlers: Handlers
    metrics: NodeObserver
    counting: bool  # False for the default NoObserver (no per-push counting)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool: ...


class Tracker(Protocol):
    """What the manager needs of a connection: its user, its codec, a queue to write to."""

    @property
    def user(self) -> str: ...

    @property
    def codec(self) -> Codec: ...

    @property
    def transport(self) -> Any: ...  # its ``name`` labels transport_messages_sent

    def send(self, data: bytes) -> None: ...


@dataclass(slots=True, eq=False)
class KeyState:
    """One tracked key on this node: its current version and who tracks it."""

    version: int = 0  # node's current version (synthetic in versionless mode)
    digest: bytes = b""  # versionless: SHA-256 of the data last seen
    fresh: bool = False  # versioned: published directly, the next poll skips it
    data: bytes | None = None  # the data of ``version``, kept while delta subscribers exist
    trackers: dict[Tracker, int] = field(default_factory=dict)  # connection -> its version


@dataclass(slots=True, eq=False)
class SharedPollChannel:
    """The node's state of one shared poll channel and its polling task."""

    name: str
    opts: SharedPollOptions
    epoch: str  # in subscribe replies: random (versionless) or the publisher's (versioned)
    keys: dict[str, KeyState] = field(default_factory=dict)
    subscribers: dict[Tracker, dict[str, int]] = field(default_factory=dict)  # key -> exp
    lost: dict[Tracker, Callable[[], None]] = field(default_factory=dict)  # epoch reset
    delta: dict[Tracker, set[str]] = field(default_factory=dict)  # fossil: keys sent whole
    seq: int = 0  # versionless: the last synthetic version given out in this epoch
    wake: set[str] = field(default_factory=set)  # keys to poll now (cold or behind)
    wakeup: anyio.Event = field(default_factory=anyio.Event)
    empty_since: float | None = None
    running: bool = False


class SharedPollManager:
    """Every shared poll channel of one node (``node.shared_poll``)."""

    def __init__(self, node: PollHost) -> None:
        self._node = node
        self.channels: dict[str, SharedPollChannel] = {}
        limit = node.config.shared_poll.concurrency_limit
        self._slots = anyio.Semaphore(limit) if limit > 0 else None
        self.refresh_calls = 0  # backend calls made (for tests and benchmarks)
        self._silent = not node.counting  # the default observer: no per-push counting

    # ------------------------------------------------------------- connections

    def subscribe(
        self,
        channel: str,
        opts: SharedPollOptions,
        tracker: Tracker,
        lost: Callable[[], None],
        *,
        delta: bool = False,
    ) -> str:
        """Add a subscriber (no keys yet); return the epoch for the subscribe reply.

        ``lost`` unsubscribes it with the insufficient-state code (a publisher epoch
        change in versioned mode). With ``delta`` (fossil negotiated) it gets each key
        whole first, then deltas against the version it holds.
        """
        ch = self.channels.get(channel)
        if ch is None:
            epoch = "" if opts.versioned else secrets.token_hex(4)
            ch = self.channels[channel] = SharedPollChannel(channel, opts, epoch)
        ch.subscribers.setdefault(tracker, {})
        ch.lost[tracker] = lost
        if delta:
            ch.delta[tracker] = set()
        ch.empty_since = None
        self._ensure_running(ch)
        return ch.epoch

    def unsubscribe(self, channel: str, tracker: Tracker) -> None:
        """Forget a subscriber and every key it tracks (unsubscribe or disconnect)."""
        ch = self.channels.get(channel)
        if ch is None:
            return
        keys = ch.subscribers.pop(tracker, {})
        ch.lost.pop(tracker, None)
        ch.delta.pop(tracker, None)
        self._drop(ch, tracker, keys)
        if not ch.subscribers:
            ch.empty_since = time.monotonic()
            ch.wakeup.set()

    def sub_refresh(self, tracker: Tracker, req: SubRefreshRequest) -> SubRefreshResult:
        """A track (type 1) or untrack (type 2) request of a subscribed connection."""
        ch = self.channels.get(req.channel)
        if ch is None or tracker not in ch.subscribers:
            raise ClientError.of(ErrorCode.PERMISSION_DENIED)
        if req.type == UNTRACK:
            if not req.untrack:
                raise ClientError.of(ErrorCode.BAD_REQUEST)
            self._untrack(ch, tracker, req.untrack)
            return SubRefreshResult()
        return self._track(ch, tracker, req)

    def _track(
        self, ch: SharedPollChannel, tracker: Tracker, req: SubRefreshRequest
    ) -> SubRefreshResult:
        if not req.track:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        items: dict[str, tuple[int, int]] = {}  # key -> (version, batch index); last wins
        for i, batch in enumerate(req.track):
            for item in batch.items:
                items.pop(item.key, None)
                items[item.key] = (item.version, i)
        if not items:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        mine = ch.subscribers[tracker]
        gone = set(req.untrack)
        new = sum(1 for k in items if k not in mine and k not in gone)
        freed = sum(1 for k in gone if k in mine)
        if len(mine) - freed + new > ch.opts.max_keys_per_connection:
            raise ClientError.of(ErrorCode.LIMIT_EXCEEDED)
        cfg = self._node.config.shared_poll
        if not cfg.hmac_secret_key:
            log.error("shared_poll.hmac_secret_key is not set: track refused on %s", ch.name)
            raise ClientError.of(ErrorCode.INTERNAL)
        expiries = [check_batch(cfg, tracker.user, ch.name, b) for b in req.track]
        for key, (version, i) in items.items():
            state = ch.keys.get(key)
            cold = state is None
            if state is None:
                state = ch.keys[key] = KeyState()
            state.trackers[tracker] = version
            mine[key] = expiries[i]
            if (cold and version == 0) or (not cold and (version == 0 or state.version > version)):
                ch.wake.add(key)  # no data here yet, or behind: poll it now
        if req.untrack:
            self._untrack(ch, tracker, req.untrack)
        if ch.wake:
            ch.wakeup.set()
        result = SubRefreshResult()
        soonest = min((e for e in expiries if e > 0), default=0)
        if soonest:
            result.expires = True
            result.ttl = max(0, soonest - int(time.time()))
        return result

    def _untrack(self, ch: SharedPollChannel, tracker: Tracker, keys: Iterable[str]) -> None:
        mine = ch.subscribers.get(tracker)
        if mine is None:
            return
        dropped = {k: 0 for k in keys if mine.pop(k, None) is not None}
        self._drop(ch, tracker, dropped)

    @staticmethod
    def _drop(ch: SharedPollChannel, tracker: Tracker, keys: Iterable[str]) -> None:
        ready = ch.delta.get(tracker)
        for key in keys:
            if ready is not None:
                ready.discard(key)
            state = ch.keys.get(key)
            if state is None:
                continue
            state.trackers.pop(tracker, None)
            if not state.trackers:
                del ch.keys[key]
                ch.wake.discard(key)

    # ------------------------------------------------------------- direct publish

    def publish(self, channel: str, key: str, data: bytes, version: int, epoch: str) -> None:
        """Deliver a versioned item to this node's trackers (``shared_poll_publish``)."""
        ch = self.channels.get(channel)
        if ch is None:
            return
        if self._epoch_changed(ch, epoch):
            return
        state = ch.keys.get(key)
        if state is None or version <= state.version:
            # nobody tracks it here, or stale: dropped silently as Centrifugo
            result = "untracked" if state is None else "stale"
            self._node.metrics.count("shared_poll_publish_count", (result, ""))
            return
        self._node.metrics.count("shared_poll_publish_count", ("delivered", ""))
        state.fresh = True
        self._changed(ch, key, state, data, version)

    # ------------------------------------------------------------------ polling

    def _ensure_running(self, ch: SharedPollChannel) -> None:
        if not ch.running and self._node.spawn(self._run, ch):
            ch.running = True

    async def _run(self, ch: SharedPollChannel) -> None:
        """Poll ``ch`` every ``refresh_interval`` (and woken keys at once) until idle."""
        opts = ch.opts
        try:
            next_cycle = time.monotonic() + opts.refresh_interval
            while True:
                now = time.monotonic()
                if ch.empty_since is not None and not ch.subscribers:
                    idle = now - ch.empty_since
                    if idle >= opts.channel_shutdown_delay:
                        if self.channels.get(ch.name) is ch:
                            del self.channels[ch.name]
                        return
                    wait = opts.channel_shutdown_delay - idle
                else:
                    wait = next_cycle - now
                if not ch.wake and wait > 0:
                    with anyio.move_on_after(wait):
                        await ch.wakeup.wait()
                ch.wakeup = anyio.Event()
                if ch.wake:
                    keys, ch.wake = sorted(ch.wake), set()
                    await self._poll(ch, keys, spread=False)
                if time.monotonic() >= next_cycle:
                    self._expire(ch)
                    keys = [k for k, st in ch.keys.items() if not st.fresh]
                    for st in ch.keys.values():
                        st.fresh = False
                    started = time.perf_counter()
                    slept = await self._poll(ch, keys, spread=True)
                    took = time.perf_counter() - started
                    metrics = self._node.metrics
                    metrics.observe("shared_poll_cycle_duration_seconds", ("",), took)
                    work = max(0.0, took - slept)
                    metrics.observe("shared_poll_cycle_work_duration_seconds", ("",), work)
                    next_cycle = time.monotonic() + opts.refresh_interval
        finally:
            ch.running = False

    def _expire(self, ch: SharedPollChannel) -> None:
        """Drop keys whose signature expired more than track_expired_extra_delay ago."""
        deadline = time.time() - ch.opts.track_expired_extra_delay
        for tracker, mine in list(ch.subscribers.items()):
            expired = [k for k, exp in mine.items() if 0 < exp < deadline]
            if expired:
                self._untrack(ch, tracker, expired)

    async def _poll(self, ch: SharedPollChannel, keys: list[str], *, spread: bool) -> float:
        """Ask the backend about ``keys`` in batches (spread over the interval when asked);
        returns the seconds spent in the spreading pauses."""
        size = ch.opts.refresh_batch_size
        batches = [keys[i : i + size] for i in range(0, len(keys), size)]
        gap = ch.opts.refresh_interval / len(batches) if spread and batches else 0.0
        trigger = "interval" if spread else "track"
        slept = 0.0
        for n, batch in enumerate(batches):
            if n and gap:
                started = time.perf_counter()
                await anyio.sleep(gap)
                slept += time.perf_counter() - started
            batch = [k for k in batch if k in ch.keys]  # untracked meanwhile
            if batch:
                await self._refresh(ch, batch, trigger)
        return slept

    async def _refresh(self, ch: SharedPollChannel, keys: list[str], trigger: str = "") -> None:
        handler = self._node.handlers.shared_poll_refresh
        if handler is None:
            log.error("shared poll channel %s: no refresh proxy and no handler", ch.name)
            return
        versioned = ch.opts.versioned
        items = [SharedPollItem(k, ch.keys[k].version if versioned else 0) for k in keys]
        event = SharedPollRefreshEvent(ch.name, items, versioned)
        self.refresh_calls += 1
        bound = max(ch.opts.refresh_interval, CALL_BOUND)
        metrics, labels = self._node.metrics, (trigger, "")
        metrics.observe("shared_poll_proxy_request_items", ("default",), len(items))
        try:
            waited = time.perf_counter()
            async with self._slots or contextlib.nullcontext():
                started = time.perf_counter()
                metrics.observe("shared_poll_sem_wait_duration_seconds", labels, started - waited)
                try:
                    with anyio.fail_after(bound):
                        reply = await handler(event)
                finally:
                    took = time.perf_counter() - started
                    metrics.observe("shared_poll_handler_duration_seconds", labels, took)
        except TimeoutError:
            metrics.count("shared_poll_handler_error_count", labels)
            log.warning("shared poll refresh of %s took over %gs: skipped", ch.name, bound)
            return
        except Exception as exc:  # the cycle is skipped, the next one retries
            metrics.count("shared_poll_handler_error_count", labels)
            log.warning("shared poll refresh of %s failed: %s", ch.name, exc)
            return
        metrics.observe("shared_poll_proxy_response_items", ("default",), len(reply.items))
        try:
            self._apply(ch, reply, trigger)
        except Exception:  # a bad reply item must not end the channel's polling
            log.exception("shared poll reply for %s not applied", ch.name)

    def _apply(
        self, ch: SharedPollChannel, reply: SharedPollRefreshReply, trigger: str = ""
    ) -> None:
        if ch.opts.versioned and self._epoch_changed(ch, reply.epoch):
            return
        metrics = self._node.metrics
        for item in reply.items:
            state = ch.keys.get(item.key)
            if state is None:
                continue  # not tracked (any more) on this node
            if item.removed:
                metrics.count("shared_poll_items_count", (trigger, "removed", ""))
                self._remove(ch, item.key, state)
                continue
            changed = item.data is not None and (
                item.version > state.version if ch.opts.versioned else True
            )
            if not changed or ch.opts.versioned:
                result = "changed" if changed else "unchanged"
                metrics.count("shared_poll_items_count", (trigger, result, ""))
            if item.data is None:
                if ch.opts.versioned:
                    state.version = max(state.version, item.version)
                continue
            data = to_payload(item.data)
            if ch.opts.versioned:
                if item.version <= 0:
                    continue  # versions start at 1
                self._changed(ch, item.key, state, data, item.version)
                continue
            digest = hashlib.sha256(data).digest()
            result = "changed" if digest != state.digest else "unchanged"
            metrics.count("shared_poll_items_count", (trigger, result, ""))
            if digest != state.digest:
                state.digest = digest
                ch.seq += 1  # channel-wide, so a rebuilt key never reuses a version
                self._changed(ch, item.key, state, data, ch.seq)
            else:
                self._deliver(ch, item.key, state, data, state.version)

    def _epoch_changed(self, ch: SharedPollChannel, epoch: str) -> bool:
        """Versioned: a new publisher epoch resets the channel (True when it did)."""
        if not epoch or epoch == ch.epoch:
            return False
        if not ch.epoch:
            ch.epoch = epoch  # the first epoch seen is adopted
            return False
        ch.epoch = epoch
        log.info("shared poll channel %s: publisher epoch changed, resubscribing", ch.name)
        ch.keys.clear()
        ch.wake.clear()
        for lost in list(ch.lost.values()):
            lost()  # unsubscribe (2500): the SDK resubscribes and tracks again
        return True

    def _changed(
        self, ch: SharedPollChannel, key: str, state: KeyState, data: bytes, version: int
    ) -> None:
        """``data`` is ``key`` at ``version``: advance the node's state and push it."""
        base = (state.version, state.data)  # what a tracker at the node's version holds
        if version > state.version:
            state.version = version
            state.data = data if ch.delta else None
        self._deliver(ch, key, state, data, version, base)

    def _deliver(
        self,
        ch: SharedPollChannel,
        key: str,
        state: KeyState,
        data: bytes,
        version: int,
        base: tuple[int, bytes | None] = (0, None),
    ) -> None:
        """Push ``data`` (``key`` at ``version``) to every tracker of it that is behind.

        Encoded once per protocol and form: plain; for fossil subscribers whole (in JSON
        as a string) or, to one that already got the key whole and holds ``base``, the
        delta from ``base``, when shorter.
        """
        pub = PublicationWire(data=msgspec.Raw(data), key=key, version=version)
        plain = EncodedOnce(Reply(push=Push(channel=ch.name, pub=pub)))  # once per protocol
        forms: dict[tuple[str, bool], bytes] = {}
        patch: bytes | None = None
        # transport_messages_sent per transport, told once per push (metrics on only)
        sent: dict[str, list[int]] | None = None if self._silent else {}
        for tracker, have in state.trackers.items():
            if have >= version:
                continue
            state.trackers[tracker] = version
            ready = ch.delta.get(tracker)
            codec = tracker.codec
            if ready is None:
                frame = plain.get(codec)
                tracker.send(frame)
                if sent is not None:
                    row = sent.setdefault(tracker.transport.name, [0, 0])
                    row[0] += 1
                    row[1] += len(frame)
                continue
            json = codec.name == "json"
            use = key in ready and have == base[0] and base[1] is not None
            if use and patch is None:
                patch = _patch(base[1] or b"", data)
            use = use and bool(patch)
            form = forms.get((codec.name, use))
            if form is None:
                if not use and not json:
                    form = plain.get(codec)  # in Protobuf the whole form is the plain one
                else:
                    body = (patch or b"") if use else data
                    raw = _json_string(body) if json else msgspec.Raw(body)
                    wire = PublicationWire(data=raw, key=key, version=version, delta=use)
                    form = EncodedOnce(Reply(push=Push(channel=ch.name, pub=wire))).get(codec)
                forms[(codec.name, use)] = form
            tracker.send(form)
            ready.add(key)
            if sent is not None:
                row = sent.setdefault(tracker.transport.name, [0, 0])
                row[0] += 1
                row[1] += len(form)
        if sent:
            metrics = self._node.metrics
            for transport, (count, size) in sent.items():
                labels = (transport, "push_publication", "")
                metrics.count("transport_messages_sent", labels, count)
                metrics.count("transport_messages_sent_size", labels, size)

    def _remove(self, ch: SharedPollChannel, key: str, state: KeyState) -> None:
        pub = PublicationWire(data=msgspec.UNSET, key=key, removed=True)
        push = EncodedOnce(Reply(push=Push(channel=ch.name, pub=pub)))
        # a JSON fossil subscriber parses every payload: a removal carries "null"
        null = PublicationWire(data=_json_string(b"null"), key=key, removed=True)
        json_null = EncodedOnce(Reply(push=Push(channel=ch.name, pub=null)))
        del ch.keys[key]
        for tracker in state.trackers:
            mine = ch.subscribers.get(tracker)
            if mine is not None:
                mine.pop(key, None)
            ready = ch.delta.get(tracker)
            codec = tracker.codec
            if ready is not None:
                ready.discard(key)
                if codec.name == "json":
                    tracker.send(json_null.get(codec))
                    continue
            tracker.send(push.get(codec))


def _json_string(data: bytes) -> msgspec.Raw:
    """``data`` as a JSON string literal (how a JSON fossil subscriber takes payloads);
    unchanged when it is not UTF-8 (then refused for JSON clients, as any binary data)."""
    try:
        return msgspec.Raw(msgspec.json.encode(data.decode("utf-8")))
    except UnicodeDecodeError:
        return msgspec.Raw(data)


def _patch(base: bytes, data: bytes) -> bytes:
    """The fossil delta from ``base`` to ``data`` when shorter and UTF-8 (a JSON string
    must be), else empty: the whole data goes."""
    patch = patch_for(base, data)
    try:
        patch.decode("utf-8")
    except UnicodeDecodeError:
        return b""
    return patch


__all__ = [
    "SharedPollChannel",
    "SharedPollManager",
    "check_batch",
    "make_signature",
    "signature_times",
    "verify_signature",
]
