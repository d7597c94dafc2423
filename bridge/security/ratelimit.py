"""Rate limits: token buckets per client network and per account, in bounded memory.

One `RateLimiter` per kind of request (sign-in pages, provisioning calls, refused bearer
tokens, wrong merge codes). A bucket holds `burst` tokens and refills `per_minute` of them a
minute; a request takes one, and an empty bucket means "try again in N seconds". At most
`max_keys` buckets are kept per limiter: the least recently used are forgotten first, and a
forgotten bucket is a full one, so memory stays bounded whatever an attacker sends.

The answer to a limited request is the same whoever asks and whatever account it names
(429, `Retry-After`, Matrix's `M_LIMIT_EXCEEDED` with `retry_after_ms`): it tells nothing
about which accounts or tokens exist.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from aiohttp import web

LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
Clock = Callable[[], float]


@attrs.frozen
class Bucket:
    """How many requests may come at once (`burst`) and how fast the allowance comes back."""

    burst: int
    per_minute: float

    @property
    def per_second(self) -> float:
        return self.per_minute / 60


class RateLimiter:
    """Token buckets by key (a client network, an account), least recently used forgotten."""

    def __init__(self, bucket: Bucket, max_keys: int = 10_000,
                 clock: Clock = time.monotonic) -> None:
        self.bucket = bucket
        self.max_keys = max_keys
        self._clock = clock
        # key -> (tokens left, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str) -> float:
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.bucket.burst), now))
        return min(float(self.bucket.burst), tokens + (now - at) * self.bucket.per_second)

    def wait(self, key: str) -> float:
        """Seconds until `key` may make a request (0 if it may now), taking nothing."""
        missing = 1 - self._tokens(key)
        if missing <= 0:
            return 0.0
        if self.bucket.per_second <= 0:
            return math.inf
        return missing / self.bucket.per_second

    def take(self, key: str) -> float:
        """Take one request's token: 0 if allowed, else the seconds to wait (nothing taken)."""
        waiting = self.wait(key)
        if waiting > 0:
            self._store(key, self._tokens(key))  # still counts as recently used
            return waiting
        self._store(key, self._tokens(key) - 1)
        return 0.0

    def _store(self, key: str, tokens: float) -> None:
        self._buckets[key] = (tokens, self._clock())
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class ExpiringCache:
    """Values remembered for `ttl` seconds, at most `max_keys` of them (oldest dropped)."""

    def __init__(self, ttl: float, max_keys: int = 10_000, clock: Clock = time.monotonic
                 ) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self._clock = clock
        self._items: OrderedDict[str, tuple[Any, float]] = OrderedDict()

    def get(self, key: str) -> Any:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            return None
        return item[0]

    def put(self, key: str, value: Any) -> None:
        self._items[key] = (value, self._clock() + self.ttl)
        self._items.move_to_end(key)
        while len(self._items) > self.max_keys:
            self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


def retry_seconds(wait: float) -> int:
    """Whole seconds for Retry-After: never 0 for a refused request."""
    return max(1, math.ceil(wait)) if math.isfinite(wait) else 24 * 3600


def limited_response(wait: float) -> web.Response:
    """429 with Retry-After and a Matrix-style body; the same for every caller."""
    seconds = retry_seconds(wait)
    return web.json_response(
        {"errcode": LIMIT_EXCEEDED, "error": "Too many requests; try again later.",
         "retry_after_ms": seconds * 1000},
        status=429, headers={"Retry-After": str(seconds)})


def wait_words(wait: float) -> str:
    seconds = retry_seconds(wait)
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


@attrs.frozen
class RateLimitSettings:
    web: Bucket = Bucket(30, 30)
    provisioning_network: Bucket = Bucket(120, 120)
    provisioning_account: Bucket = Bucket(60, 60)
    unknown_tokens: Bucket = Bucket(10, 10)
    unknown_token_cache_seconds: float = 60
    merge_confirm: Bucket = Bucket(5, 0.5)
    max_keys: int = 10_000

    @classmethod
    def from_config(cls, get: Callable[[str], Any]) -> RateLimitSettings:
        def bucket(name: str) -> Bucket:
            return Bucket(get(f"{name}.burst"), get(f"{name}.per_minute"))

        return cls(bucket("web"), bucket("provisioning_network"),
                   bucket("provisioning_account"), bucket("unknown_tokens"),
                   get("unknown_token_cache_seconds"), bucket("merge_confirm"),
                   get("max_keys"))


# The buckets and their defaults, for the config schema.
BUCKET_DEFAULTS = {name: getattr(RateLimitSettings(), name)
                   for name in ("web", "provisioning_network", "provisioning_account",
                                "unknown_tokens", "merge_confirm")}


class Limits:
    """Every limiter the bridge uses, built once from the config and shared by the web layer
    and the bot."""

    def __init__(self, settings: RateLimitSettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        keys = settings.max_keys
        self.web = RateLimiter(settings.web, keys, clock)
        self.provisioning_network = RateLimiter(settings.provisioning_network, keys, clock)
        self.provisioning_account = RateLimiter(settings.provisioning_account, keys, clock)
        self.unknown_tokens = RateLimiter(settings.unknown_tokens, keys, clock)
        self.merge_confirm = RateLimiter(settings.merge_confirm, keys, clock)
        # Answers to bearer tokens the API refused, by a digest of the token: a token sent
        # again is answered from here without another database or homeserver look-up.
        self.refused_tokens = ExpiringCache(settings.unknown_token_cache_seconds, keys, clock)
        # Which account a working token belongs to, so its account's limit applies before
        # the request is handled.
        self.token_accounts = ExpiringCache(600, keys, clock)
