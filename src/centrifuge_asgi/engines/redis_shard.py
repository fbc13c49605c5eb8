"""Redis topologies: address parsing, one shard's command client, names and timeouts.

A *shard* is one independent Redis deployment: a single server, a Sentinel-managed
master, or a whole Redis Cluster. Several shards split channels between them by a
consistent hash of the channel name (Jump hash of FNV-1a 64, as Centrifugo does), so a
channel's history, presence and PUB/SUB topic always live on the same shard.

Every command goes through :meth:`Shard.call`, which bounds it by ``io_timeout`` and
translates redis-py failures into :class:`~centrifuge_asgi.errors.EngineUnavailable`
(cannot reach Redis) or :class:`~centrifuge_asgi.errors.EngineError` (anything else).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import anyio

from ..errors import ConfigError, EngineError, EngineUnavailable
from .redis_resp import Endpoint, RespConnection

try:
    import redis.asyncio as aioredis
    import redis.exceptions as redis_errors
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the Redis engine needs redis-py: pip install 'centrifuge-asgi[redis]'"
    ) from exc

from ..config import RedisConfig, TLSConfig

__all__ = ["RedisTarget", "Shard", "jump_hash", "parse_targets", "shard_index"]

T = TypeVar("T")
Kind = Literal["standalone", "sentinel", "cluster"]


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """One shard's address: a server, a Sentinel group or a cluster's seed nodes."""

    kind: Kind
    hosts: tuple[tuple[str, int], ...] = ()
    unix_path: str = ""
    db: int = 0
    username: str = ""
    password: str = ""
    tls: bool = False
    master_name: str = ""
    sentinel_username: str = ""
    sentinel_password: str = ""

    def __str__(self) -> str:
        where = self.unix_path or ",".join(f"{h}:{p}" for h, p in self.hosts)
        return f"{self.kind}({where})"


def _host_port(text: str, default_port: int = 6379) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        return text.strip(), default_port
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise ConfigError(f"bad redis address {text!r}") from None


def _parse_url(text: str, base: RedisTarget) -> RedisTarget:
    """``host:port`` or a URL with scheme redis, rediss, tcp, unix, redis+sentinel,
    rediss+sentinel or redis+cluster (user, password, ``/db`` and query options)."""
    if "://" not in text:
        return replace(base, kind="standalone", hosts=(_host_port(text),))
    url = urlsplit(text)
    query = parse_qs(url.query)
    scheme = url.scheme.lower()
    target = replace(
        base,
        username=unquote(url.username or "") or base.username,
        password=unquote(url.password or "") or base.password,
        tls=scheme.startswith("rediss") or base.tls,
    )
    if "db" in query:
        target = replace(target, db=int(query["db"][0]))
    elif url.path.strip("/").isdigit():
        target = replace(target, db=int(url.path.strip("/")))
    extra = tuple(_host_port(a) for a in query.get("addr", []))
    location = url.netloc.rpartition("@")[2]
    hosts = ((_host_port(location),) if location else ()) + extra
    if scheme == "unix":
        return replace(target, kind="standalone", unix_path=url.path, hosts=())
    if scheme in ("redis", "rediss", "tcp"):
        return replace(target, kind="standalone", hosts=hosts[:1])
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        name = query.get("sentinel_master_name", [base.master_name])[0]
        if not name:
            raise ConfigError(f"{text!r}: sentinel_master_name is required")
        return replace(
            target,
            kind="sentinel",
            hosts=hosts,
            master_name=name,
            sentinel_username=query.get("sentinel_user", [base.sentinel_username])[0],
            sentinel_password=query.get("sentinel_password", [base.sentinel_password])[0],
        )
    if scheme in ("redis+cluster", "rediss+cluster"):
        return replace(target, kind="cluster", hosts=hosts)
    raise ConfigError(f"unsupported redis address scheme in {text!r}")


def parse_targets(cfg: RedisConfig) -> list[RedisTarget]:
    """The shards a Redis block describes: ``cluster_address`` wins over
    ``sentinel_address``, which wins over ``address``."""
    base = RedisTarget(
        kind="standalone",
        db=cfg.db,
        username=cfg.user,
        password=cfg.password,
        tls=cfg.tls.enabled,
        master_name=cfg.sentinel_master_name,
        sentinel_username=cfg.sentinel_user,
        sentinel_password=cfg.sentinel_password,
    )
    if cfg.cluster_address:
        return [
            replace(base, kind="cluster", hosts=tuple(_host_port(h) for h in entry.split(",")))
            for entry in cfg.cluster_address
        ]
    if cfg.sentinel_address:
        if not cfg.sentinel_master_name:
            raise ConfigError("sentinel_address needs sentinel_master_name")
        return [
            replace(base, kind="sentinel", hosts=tuple(_host_port(h) for h in entry.split(",")))
            for entry in cfg.sentinel_address
        ]
    if not cfg.address:
        raise ConfigError("redis address is empty")
    return [_parse_url(entry, base) for entry in cfg.address]


# ------------------------------------------------------------------------ sharding


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash (Lamping & Veach): a bucket in ``[0, buckets)``."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def shard_index(channel: str, shards: int) -> int:
    """Which of ``shards`` shards owns ``channel``."""
    return 0 if shards <= 1 else jump_hash(_fnv1a64(channel.encode()), shards)


# ------------------------------------------------------------------------ TLS


def _ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=tls.server_ca_pem or None)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_pem and tls.key_pem:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            with open(cert, "w") as f:
                f.write(tls.cert_pem)
            with open(key, "w") as f:
                f.write(tls.key_pem)
            context.load_cert_chain(cert, key)
    return context


# ------------------------------------------------------------------------ the shard


@dataclass
class Shard:
    """One shard: a redis-py command client plus what PUB/SUB connections need.

    ``open()`` must be awaited before use; ``close()`` releases the client.
    """

    index: int
    target: RedisTarget
    prefix: str
    io_timeout: float = 4.0
    connect_timeout: float = 1.0
    client_name: str = ""
    tls: TLSConfig = field(default_factory=TLSConfig)
    client: Any = None
    _sentinel: Any = None
    _ssl: ssl.SSLContext | None = None
    _scripts: dict[str, Any] = field(default_factory=dict)
    _cluster_node: int = 0  # which cluster node the last control connection went to

    @property
    def cluster(self) -> bool:
        return self.target.kind == "cluster"

    def __str__(self) -> str:
        return f"shard {self.index} {self.target}"

    # --- names (hash tags in a cluster keep a channel's keys in one slot)

    def tag(self, channel: str) -> str:
        return "{" + channel + "}" if self.cluster else channel

    def stream_key(self, channel: str) -> str:
        return f"{self.prefix}.stream.{self.tag(channel)}"

    def meta_key(self, channel: str) -> str:
        return f"{self.prefix}.stream.meta.{self.tag(channel)}"

    def result_key(self, channel: str, key: str) -> str:
        return f"{self.prefix}.result.{self.tag(channel)}.{key}"

    def presence_keys(self, channel: str) -> tuple[str, str]:
        tag = self.tag(channel)
        return f"{self.prefix}.presence.data.{tag}", f"{self.prefix}.presence.expire.{tag}"

    def client_channel(self, channel: str) -> bytes:
        return f"{self.prefix}.client.{self.tag(channel)}".encode()

    @property
    def publish_command(self) -> str:
        return "SPUBLISH" if self.cluster else "PUBLISH"

    # --- lifecycle

    def _common(self) -> dict[str, Any]:
        t = self.target
        kwargs: dict[str, Any] = {
            "socket_timeout": self.io_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": Retry(NoBackoff(), 1),
            "protocol": 2,
            "username": t.username or None,
            "password": t.password or None,
            "client_name": self.client_name or None,
        }
        if t.tls:
            kwargs["ssl"] = True
            kwargs["ssl_ca_data"] = self.tls.server_ca_pem or None
            if self.tls.insecure_skip_verify:
                kwargs["ssl_cert_reqs"] = "none"
                kwargs["ssl_check_hostname"] = False
        return kwargs

    async def open(self) -> None:
        """Create the command client (and learn a cluster's slots)."""
        if self.client is not None:
            return
        t = self.target
        if t.tls:
            self._ssl = _ssl_context(self.tls)
        common = self._common()
        if t.kind == "cluster":
            nodes = [ClusterNode(h, p) for h, p in t.hosts]
            client = RedisCluster(startup_nodes=nodes, **common)
            await self.call(client.initialize)
            self.client = client
        elif t.kind == "sentinel":
            sentinel_kwargs = {
                "socket_timeout": self.io_timeout,
                "socket_connect_timeout": self.connect_timeout,
                "username": t.sentinel_username or None,
                "password": t.sentinel_password or None,
            }
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
                list(t.hosts), sentinel_kwargs=sentinel_kwargs, **common
            )
            self.client = self._sentinel.master_for(t.master_name, db=t.db, **common)
        elif t.unix_path:
            self.client = aioredis.Redis(unix_socket_path=t.unix_path, db=t.db, **common)
        else:
            host, port = t.hosts[0]
            self.client = aioredis.Redis(host=host, port=port, db=t.db, **common)

    async def close(self) -> None:
        client, self.client = self.client, None
        self._scripts.clear()
        if client is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await client.aclose()

    # --- commands

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run one redis-py call, bounded by io_timeout, with errors translated."""
        try:
            with anyio.fail_after(self.io_timeout):
                return await fn(*args)
        except TimeoutError as exc:  # before OSError, of which it is a subclass
            raise EngineUnavailable(f"redis {self}: no reply within {self.io_timeout}s") from exc
        except (
            redis_errors.ConnectionError,
            redis_errors.TimeoutError,
            redis_errors.RedisClusterException,  # no node reachable, a slot not covered
            OSError,
        ) as exc:
            raise EngineUnavailable(f"redis {self}: {exc}") from exc
        except redis_errors.RedisError as exc:
            raise EngineError(f"redis {self}: {exc}") from exc

    async def command(self, *args: Any, **options: Any) -> Any:
        """``execute_command`` through :meth:`call`."""
        if self.client is None:
            raise EngineUnavailable(f"redis {self} is closed")
        return await self.call(lambda: self.client.execute_command(*args, **options))

    async def script(self, text: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        """Run a Lua script (EVALSHA, loading it after a restart or SCRIPT FLUSH)."""
        if self.client is None:
            raise EngineUnavailable(f"redis {self} is closed")
        script = self._scripts.get(text)
        if script is None:
            script = self._scripts[text] = self.client.register_script(text)
        return await self.call(lambda: script(keys=list(keys), args=list(args)))

    # --- PUB/SUB connections

    async def master_endpoint(self) -> Endpoint:
        """Where the PUB/SUB connection of a non-cluster shard goes (asks Sentinel)."""
        t = self.target
        if t.kind == "sentinel":
            host, port = await self.call(self._sentinel.discover_master, t.master_name)
            return self.endpoint(str(host), int(port))
        if t.unix_path:
            return replace(self.endpoint("", 0), unix_path=t.unix_path)
        return self.endpoint(*t.hosts[0])

    def endpoint(self, host: str, port: int) -> Endpoint:
        t = self.target
        return Endpoint(
            host=host,
            port=port,
            username=t.username,
            password=t.password,
            client_name=self.client_name,
            tls=self._ssl,
        )

    async def dial(self, endpoint: Endpoint | None = None) -> RespConnection:
        """A fresh PUB/SUB connection to ``endpoint`` (default: the shard's master; in a
        cluster, any node that answers)."""
        timeout = self.connect_timeout + self.io_timeout
        if endpoint is None and self.cluster:
            return await self._dial_cluster_node(timeout)
        if endpoint is None:
            endpoint = await self.master_endpoint()
        return await RespConnection.open(endpoint, timeout)

    async def _dial_cluster_node(self, timeout: float) -> RespConnection:  # noqa: ASYNC109
        """Any cluster node carries the control topics (PUBLISH reaches every node): the
        one that answered last time, else the next seed or node learnt since that does,
        so a dead node (such as a master just replaced by its replica) is skipped."""
        hosts = list(self.target.hosts)
        if self.client is not None:
            known = self.client.nodes_manager.nodes_cache.values()
            hosts += [h for h in ((str(n.host), int(n.port)) for n in known) if h not in hosts]
        error: Exception = EngineUnavailable(f"redis {self}: no cluster node to dial")
        for i in range(len(hosts)):
            index = (self._cluster_node + i) % len(hosts)
            try:
                conn = await RespConnection.open(self.endpoint(*hosts[index]), timeout)
            except Exception as exc:  # OSError, TimeoutError, an error reply
                error = exc
                continue
            self._cluster_node = index
            return conn
        raise error

    # --- cluster routing

    def slot_of(self, channel: bytes) -> int:
        return int(self.client.keyslot(channel))

    def slot_owner(self, slot: int) -> tuple[str, int]:
        node = self.client.nodes_manager.get_node_from_slot(slot)
        return str(node.host), int(node.port)

    async def refresh_slots(self) -> None:
        await self.call(self.client.nodes_manager.initialize)
