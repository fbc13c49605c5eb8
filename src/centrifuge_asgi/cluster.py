"""Node-to-node messages: one typed message per operation, and one survey primitive.

The node's server actions (subscribe, unsubscribe, disconnect, refresh, send) are applied
locally and then sent to every other node, which applies them to its own connections.
Nodes announce themselves every few seconds, which is how they know each other. Every
question one node asks others goes through one request/reply primitive,
:meth:`Cluster.survey`: a request to every node (the channels list, ``info``) or to one
(an ``/emulation`` frame for the node holding its stream), and the replies collected by a
:class:`Survey` until every asked node answered or the wait ends.

The wire
--------
A message is a msgspec Struct tagged by ``op`` and encoded as JSON; the controller
(``engines/base.py``) moves it as opaque bytes. The tags and field names are those of the
single ``_Control`` struct that nodes before this module sent, so both versions
understand each other during a rolling upgrade: where a field's meaning is narrower than
its old name, the attribute has its own name and keeps the old one on the wire
(``msgspec.field(name=...)``). ``v`` is the message format version; 1 is omitted on
the wire, exactly as the previous nodes sent it. A message whose ``op`` this node does
not know, or whose ``v`` is newer, comes from a newer node: it is logged (once per op)
and ignored. A newer node therefore keeps sending ``v`` 1 messages for as long as older
nodes may run.

Requests that older nodes do not answer (``info_survey``, and the acknowledgement of an
``emulation`` frame) are only sent to, or only waited for from, the peers whose
announcement lists that op in ``answers``; an older node's announcement has none, so
``info`` shows what it last announced and its ``/emulation`` frames are sent without
waiting, as before.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import anyio
import msgspec

from .auth import SubscriptionOverride
from .codes import DisconnectCode, ErrorCode, UnsubscribeCode
from .engines.base import Controller, StreamPosition
from .errors import ClientError, EngineError
from .subscriptions import Grant

if TYPE_CHECKING:
    from .registry import Registry
    from .session import Session
    from .shared_poll import SharedPollManager

log = logging.getLogger("centrifuge_asgi.cluster")

VERSION = 1
"""The newest message format version this node reads and writes."""

NODE_INTERVAL = 3.0  # seconds between node announcements (Centrifugo: 3 s)
NODE_TTL = 2 * NODE_INTERVAL + 1  # a peer silent for longer is dropped from info

# Reply codes of an emulation frame (as Centrifuge's: 0 done; here also whether queued).
QUEUED = 0
NO_STREAM = 1  # no stream of that session on the node: dropped (204, as for a local one)
QUEUE_FULL = 2  # the stream's queue stayed full (503, as for a local one)


# ---------------------------------------------------------------------------- messages


class Message(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="op"):
    """What every node-to-node message carries: its sender and format version."""

    origin: str
    v: int = VERSION


class Targeted(Message, kw_only=True, omit_defaults=True):
    """A server action for one user's connections, narrowed to a client or a session."""

    user: str = ""
    client: str = ""
    session: str = ""


class Disconnect(Targeted, tag="disconnect"):
    code: int = 0  # 0: 3007 force disconnect
    reason: str = ""
    whitelist: list[str] = []


class Unsubscribe(Targeted, tag="unsubscribe"):
    channel: str = ""
    code: int = 0  # 0: 2000 server unsubscribe
    reason: str = ""


class Subscribe(Targeted, tag="subscribe"):
    channel: str = ""
    info: bytes | None = None
    data: bytes | None = None
    expire_at: int = 0
    override: dict[str, bool] = {}
    recover: bool = False  # replay from (recover_offset, recover_epoch)
    recover_offset: int = 0
    recover_epoch: str = ""


class Refresh(Targeted, tag="refresh"):
    expire_at: int = 0
    expired: bool = False
    info: bytes | None = None


class Send(Targeted, tag="send"):
    data: bytes | None = msgspec.field(default=None, name="info")


class ChannelsSurvey(Message, tag="channels_survey"):
    """A survey request: every node answers with its channels matching ``pattern``."""

    request: str = msgspec.field(default="", name="client")
    pattern: str = msgspec.field(default="", name="channel")


class ChannelsReply(Message, tag="channels_reply"):
    """One node's answer to a :class:`ChannelsSurvey`: channel → subscriber count (JSON)."""

    request: str = msgspec.field(default="", name="client")
    counts: bytes | None = msgspec.field(default=None, name="info")


class NodeInfo(Message, tag="node"):
    """A node's announcement: its statistics (JSON), as ``info`` lists them, and the ops of
    the requests it answers with a :class:`Reply` (none for a node before replies)."""

    stats: bytes | None = msgspec.field(default=None, name="info")
    answers: list[str] = []


class InfoSurvey(Message, tag="info_survey"):
    """A survey request: every node answers with a :class:`Reply` carrying its statistics."""

    request: str = ""


class Emulation(Message, tag="emulation"):
    """An ``/emulation`` frame for the stream of ``session_id`` on the addressed node.

    With ``request`` set, the node answers with a :class:`Reply` once the frame is queued
    (``code``: QUEUED, NO_STREAM or QUEUE_FULL); older nodes sent and read it without.
    """

    session_id: str = msgspec.field(default="", name="client")
    data: bytes | None = msgspec.field(default=None, name="info")
    request: str = ""


class Reply(Message, tag="reply"):
    """One node's answer to a request (every request but the channels survey, whose
    :class:`ChannelsReply` keeps the previous wire)."""

    request: str = ""
    code: int = 0
    data: bytes | None = None


class SharedPollPublish(Message, tag="shared_poll_publish"):
    """``shared_poll_publish``: a new version of a key for every node's trackers."""

    channel: str = ""
    key: str = ""
    data: bytes = b""
    version: int = 0
    epoch: str = ""


Action = Disconnect | Unsubscribe | Subscribe | Refresh | Send
Request = ChannelsSurvey | InfoSurvey | Emulation
Answer = ChannelsReply | Reply
AnyMessage = Action | Request | Answer | NodeInfo | SharedPollPublish

ANSWERS = ("info_survey", "emulation")
"""The requests this node answers with a :class:`Reply` (its announcements say so)."""


class _Envelope(msgspec.Struct):
    """What can be read of a message this node cannot decode in full."""

    op: str = ""
    v: int = VERSION
    origin: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyMessage)
_envelope = msgspec.json.Decoder(_Envelope)
_counts = msgspec.json.Decoder(dict[str, int])
_stats = msgspec.json.Decoder(dict[str, Any])
_MESSAGES = (
    *(Disconnect, Unsubscribe, Subscribe, Refresh, Send),
    *(ChannelsSurvey, ChannelsReply, NodeInfo, InfoSurvey, Emulation, Reply),
    SharedPollPublish,
)
_OPS = frozenset(str(cls.__struct_config__.tag) for cls in _MESSAGES)


def encode(message: AnyMessage) -> bytes:
    return _encoder.encode(message)


class UnknownMessage(ValueError):
    """A well-formed message from a newer node: an ``op`` or a ``v`` this node lacks."""

    def __init__(self, op: str, version: int) -> None:
        super().__init__(f"op {op!r} v{version}")
        self.op = op
        self.version = version


def decode(data: bytes) -> AnyMessage:
    """The message in ``data``: UnknownMessage for a newer node's, msgspec errors when malformed."""
    try:
        message = _decoder.decode(data)
    except msgspec.ValidationError:
        env = _envelope.decode(data)  # raises for what is not even an envelope
        if env.origin and (env.v > VERSION or (env.op and env.op not in _OPS)):
            raise UnknownMessage(env.op, env.v) from None
        raise
    if message.v > VERSION:
        raise UnknownMessage(_op(message), message.v)
    return message


# ---------------------------------------------------------------------------- survey

R = TypeVar("R")


class Survey(Generic[R]):
    """Replies to one request, complete when every expected peer answered.

    A reply from a node that was not expected (a peer that announced itself meanwhile)
    is kept too; a reply that arrives after the survey ended finds no survey and is
    dropped by :class:`Cluster`.
    """

    def __init__(self, expected: set[str]) -> None:
        self.request = uuid.uuid4().hex
        self.expected = set(expected)
        self.replies: dict[str, R] = {}
        self.done = anyio.Event()
        if not self.expected:
            self.done.set()

    def add(self, node_id: str, reply: R) -> None:
        self.replies[node_id] = reply
        if self.expected <= self.replies.keys():
            self.done.set()

    async def wait(self, seconds: float) -> dict[str, R]:
        """The replies that came within ``seconds`` (all, as soon as every peer answered)."""
        with anyio.move_on_after(seconds):
            await self.done.wait()
        return dict(self.replies)


# ---------------------------------------------------------------------------- cluster


class ClusterHost(Protocol):
    """What the cluster needs of the node."""

    @property
    def node_id(self) -> str: ...

    @property
    def registry(self) -> Registry[Session]: ...

    @property
    def controller(self) -> Controller: ...

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool: ...

    def channels(self, pattern: str = "") -> dict[str, int]: ...

    def node_stats(self) -> dict[str, Any]: ...

    @property
    def shared_poll(self) -> SharedPollManager: ...


class Cluster:
    """The node's side of node-to-node messaging; the controller's control handler."""

    def __init__(self, host: ClusterHost) -> None:
        self._host = host
        self._peers: dict[str, tuple[float, dict[str, Any]]] = {}  # node id -> (seen, stats)
        self._answers: dict[str, frozenset[str]] = {}  # node id -> the requests it answers
        self._surveys: dict[str, Survey[Answer]] = {}
        self._unknown: set[str] = set()  # ops of newer nodes, logged once each

    # ------------------------------------------------------------- outgoing

    async def publish(self, message: AnyMessage, node_id: str = "") -> bool:
        """Send ``message`` to every node (or to ``node_id``); see ``Controller``."""
        return await self._host.controller.publish_control(encode(message), node_id)

    async def act(self, action: Action) -> None:
        """Apply a server action here, then on every other node (ClientError 100 when
        the others cannot be reached)."""
        await self.apply(action)
        try:
            await self.publish(action)
        except EngineError as exc:
            log.error("control %s could not reach other nodes: %s", _op(action), exc)
            raise ClientError.of(ErrorCode.INTERNAL) from exc

    async def shared_poll_publish(
        self, channel: str, key: str, data: bytes, version: int, epoch: str
    ) -> None:
        """Send a shared poll publication to every other node (100 when unreachable)."""
        message = SharedPollPublish(
            origin=self._host.node_id,
            channel=channel,
            key=key,
            data=data,
            version=version,
            epoch=epoch,
        )
        try:
            await self.publish(message)
        except EngineError as exc:
            log.error("shared_poll_publish could not reach other nodes: %s", exc)
            raise ClientError.of(ErrorCode.INTERNAL) from exc

    async def survey(
        self,
        request: Callable[[str], Request],
        expected: Iterable[str],
        wait: float,
        node_id: str = "",
    ) -> dict[str, Answer] | None:
        """The request/reply primitive: send ``request(survey id)`` to every node (or to
        ``node_id``) and return the answers of the nodes that replied within ``wait``
        seconds, as soon as every ``expected`` node did; None when the controller knows
        that no node ``node_id`` listens. A reply after the wait is dropped."""
        survey: Survey[Answer] = Survey(set(expected))
        self._surveys[survey.request] = survey
        try:
            if not await self.publish(request(survey.request), node_id) and node_id:
                return None
            return await survey.wait(wait)
        finally:
            del self._surveys[survey.request]

    async def channels(self, pattern: str = "", wait: float = 1.0) -> dict[str, int]:
        """This node's channels plus every peer's that answered within ``wait`` seconds."""
        self._forget_silent_peers()
        result = self._host.channels(pattern)
        if not self._peers:
            return result
        origin = self._host.node_id

        def request(rid: str) -> ChannelsSurvey:
            return ChannelsSurvey(origin=origin, request=rid, pattern=pattern)

        for answer in (await self.survey(request, self._peers, wait) or {}).values():
            if not isinstance(answer, ChannelsReply) or answer.counts is None:
                continue
            with contextlib.suppress(msgspec.DecodeError, RecursionError):  # not an answer
                for ch, n in _counts.decode(answer.counts).items():
                    result[ch] = result.get(ch, 0) + n
        return result

    async def info(self, wait: float = 0.5) -> list[dict[str, Any]]:
        """Every peer's statistics: as it answers an ``info_survey`` now, or, for a peer
        that does not answer them (an older node) or not within ``wait`` seconds, as it
        last announced itself (Centrifugo's ``info`` shows the announcements)."""
        self._forget_silent_peers()
        found = {node_id: stats for node_id, (_, stats) in self._peers.items()}
        asked = [n for n in found if "info_survey" in self._answers.get(n, ())]
        if asked:
            origin = self._host.node_id

            def request(rid: str) -> InfoSurvey:
                return InfoSurvey(origin=origin, request=rid)

            for node_id, answer in (await self.survey(request, asked, wait) or {}).items():
                if isinstance(answer, Reply) and answer.data is not None:
                    with contextlib.suppress(msgspec.DecodeError, RecursionError):
                        found[node_id] = _stats.decode(answer.data)
        return list(found.values())

    def peers(self) -> list[dict[str, Any]]:
        """The statistics that every peer heard from within the last ``NODE_TTL`` seconds
        announced, without asking anyone."""
        self._forget_silent_peers()
        return [stats for _, stats in self._peers.values()]

    async def announce_loop(self) -> None:
        """Tell the other nodes about this one every ``NODE_INTERVAL`` seconds."""
        while True:
            try:
                await self.announce()
            except Exception as exc:
                log.warning("node announcement failed: %s", exc)
            await anyio.sleep(NODE_INTERVAL)

    async def announce(self) -> None:
        stats = msgspec.json.encode(self._host.node_stats())
        await self.publish(NodeInfo(origin=self._host.node_id, stats=stats, answers=[*ANSWERS]))

    async def forward_emulation(
        self, node_id: str, session_id: str, data: bytes, wait: float = 10.0
    ) -> bool:
        """Send an ``/emulation`` frame to the node holding its stream: an addressed request
        on the survey primitive, True once that node queued it. False when the controller
        knows that no such node listens; TimeoutError when the stream's queue stayed full or
        no reply came within ``wait`` seconds (the HTTP answers: 204, 404, 503).

        A node that does not acknowledge frames (an older one, or one not heard from yet)
        gets the frame without waiting: True means it was sent.
        """
        origin = self._host.node_id
        if "emulation" not in self._answers.get(node_id, ()):
            message = Emulation(origin=origin, session_id=session_id, data=data)
            return await self.publish(message, node_id)

        def request(rid: str) -> Emulation:
            return Emulation(origin=origin, session_id=session_id, data=data, request=rid)

        answers = await self.survey(request, [node_id], wait, node_id)
        if answers is None:
            return False
        answer = answers.get(node_id)
        if not isinstance(answer, Reply) or answer.code == QUEUE_FULL:
            raise TimeoutError(f"emulation frame for {session_id} not queued on {node_id}")
        return True

    # ------------------------------------------------------------- incoming

    def handle_control(self, data: bytes) -> None:
        """The controller's callback (``ControlEventHandler``): synchronous, never blocks."""
        try:
            message = decode(data)
        except UnknownMessage as exc:
            if exc.op not in self._unknown:
                self._unknown.add(exc.op)
                log.warning("control message from a newer node ignored: %s", exc)
            return
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            log.warning("malformed control message ignored")
            return
        host = self._host
        if message.origin == host.node_id:
            return
        if isinstance(message, ChannelsReply | Reply):
            survey = self._surveys.get(message.request)
            if survey is not None:  # else late: the survey ended
                survey.add(message.origin, message)
        elif isinstance(message, ChannelsSurvey | InfoSurvey | Emulation):
            host.spawn(self._answer, message)
        elif isinstance(message, SharedPollPublish):
            m = message
            host.shared_poll.publish(m.channel, m.key, m.data, m.version, m.epoch)
        elif isinstance(message, NodeInfo):
            if message.stats is not None:
                self._forget_silent_peers()
                if message.origin not in self._peers:
                    host.spawn(self.announce)  # a new peer learns about this node at once
                with contextlib.suppress(msgspec.DecodeError, RecursionError):
                    stats = msgspec.json.decode(message.stats)
                    self._peers[message.origin] = (time.monotonic(), stats)
                    self._answers[message.origin] = frozenset(message.answers)
        else:
            host.spawn(self.apply, message)

    async def _answer(self, request: Request) -> None:
        """Answer a request from another node (an emulation frame from an older node, or
        sent without waiting, is only fed)."""
        host = self._host
        reply: Answer
        if isinstance(request, ChannelsSurvey):
            counts = msgspec.json.encode(host.channels(request.pattern))
            reply = ChannelsReply(origin=host.node_id, request=request.request, counts=counts)
        elif isinstance(request, InfoSurvey):
            stats = msgspec.json.encode(host.node_stats())
            reply = Reply(origin=host.node_id, request=request.request, data=stats)
        else:
            code = await self._feed_emulation(request)
            if not request.request:
                return
            reply = Reply(origin=host.node_id, request=request.request, code=code)
        await self.publish(reply, request.origin)

    async def _feed_emulation(self, message: Emulation) -> int:
        """Hand a frame that another node routed here to its stream; the reply code."""
        if message.data is None:
            return NO_STREAM
        try:
            fed = await self._host.registry.feed_emulation(message.session_id, message.data)
        except TimeoutError:
            log.warning("emulation frame for %s dropped: its queue stays full", message.session_id)
            return QUEUE_FULL
        return QUEUED if fed else NO_STREAM

    async def apply(self, action: Action) -> None:
        """Apply a server action to this node's matching connections."""
        for session in self._targets(action):
            try:
                await _apply_to(session, action)
            except ClientError as exc:  # refused for this connection: 110 (expire_at passed)
                client = session.client_id
                log.info("control %s refused for client=%s: %s", _op(action), client, exc)
            except Exception:  # one connection's failure must not stop the others
                log.exception("control %s failed for client=%s", _op(action), session.client_id)

    def _targets(self, action: Action) -> list[Session]:
        registry = self._host.registry
        if action.client:
            s = registry.session(action.client)
            found = [s] if s is not None and s.user == action.user else []
        else:
            found = registry.user_sessions(action.user)
        if action.session:
            return [s for s in found if s.session_id == action.session]
        return found

    def _forget_silent_peers(self) -> None:
        now = time.monotonic()
        for node_id, (seen, _) in list(self._peers.items()):
            if now - seen > NODE_TTL:
                del self._peers[node_id]
                self._answers.pop(node_id, None)


async def _apply_to(s: Session, action: Action) -> None:
    if isinstance(action, Disconnect):
        if s.client_id not in action.whitelist:
            s.disconnect(action.code or DisconnectCode.FORCE_DISCONNECT, action.reason)
    elif isinstance(action, Unsubscribe):
        code = action.code or UnsubscribeCode.SERVER
        await s.server_unsubscribe(action.channel, code, action.reason)
    elif isinstance(action, Subscribe):
        grant = Grant(
            info=action.info,
            data=action.data,
            expire_at=action.expire_at or None,
            override=SubscriptionOverride(**action.override) if action.override else None,
        )
        since = (
            StreamPosition(action.recover_offset, action.recover_epoch) if action.recover else None
        )
        await s.server_subscribe(action.channel, grant, since)
    elif isinstance(action, Refresh):
        s.apply_refresh(action.expire_at or None, action.info, action.expired)
    elif isinstance(action, Send) and action.data is not None:
        s.push_message(action.data)


def _op(message: Message) -> str:
    return str(type(message).__struct_config__.tag)


__all__ = [
    "ANSWERS",
    "NODE_INTERVAL",
    "NODE_TTL",
    "NO_STREAM",
    "QUEUED",
    "QUEUE_FULL",
    "VERSION",
    "Action",
    "Answer",
    "AnyMessage",
    "ChannelsReply",
    "ChannelsSurvey",
    "Cluster",
    "ClusterHost",
    "Disconnect",
    "Emulation",
    "InfoSurvey",
    "Message",
    "NodeInfo",
    "Refresh",
    "Reply",
    "Request",
    "Send",
    "Subscribe",
    "Survey",
    "UnknownMessage",
    "Unsubscribe",
    "decode",
    "encode",
]
