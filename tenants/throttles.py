"""Requests per API key, counted in a sliding window: one Redis round trip and a few bytes per request.

DRF's SimpleRateThrottle keeps every request's timestamp of the last window in one cache entry, read and
written whole by each request: at 600 requests a minute that is a 600-float list pickled twice and two
round trips per request, growing with the rate. Here each key has a counter per fixed window (a minute
for "/min"); the count a request is judged by is the current window's plus the previous window's weighted
by how much of it still overlaps the sliding window (the estimate Cloudflare and others use). With Redis
(REDIS_URL) the counters are shared by every process and cost one pipeline (INCR, EXPIRE, GET); without
it they live in this process's cache, like everything else then.
"""

from __future__ import annotations

import functools
import time

import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle


@functools.cache
def _redis(url: str) -> redis.Redis:
    """A client of this process (thread-safe: its pool hands each thread a connection)."""
    timeout = settings.REDIS_TIMEOUT_SECONDS
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def window_counts(key: str, window: int, duration: int) -> tuple[int, int]:
    """Count a request in `key`'s window number `window`: (this window's count, the previous one's)."""
    current, previous = f"{key}:{window}", f"{key}:{window - 1}"
    ttl = 2 * duration  # the window is read as "previous" for one more duration
    if settings.REDIS_URL:
        with _redis(settings.REDIS_URL).pipeline(transaction=False) as pipe:
            pipe.incr(current)
            pipe.expire(current, ttl)
            pipe.get(previous)
            count, _, before = pipe.execute()
        return count, int(before or 0)
    cache.add(current, 0, ttl)
    return cache.incr(current), cache.get(previous, 0)


def window_uncount(key: str, window: int) -> None:
    """Take back a request counted in `key`'s window (it was refused: it spends none of the budget)."""
    current = f"{key}:{window}"
    if settings.REDIS_URL:
        _redis(settings.REDIS_URL).decr(current)
    else:
        cache.decr(current)


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per API key, from the THROTTLE_RATE setting or the tenant's own requests_per_minute."""

    scope = "api_key"
    cache_format = "parley:throttle:%(scope)s:%(ident)s"

    def get_rate(self) -> str:
        return settings.THROTTLE_RATE  # read per request, so settings overrides take effect

    def get_cache_key(self, request, view) -> str | None:
        rate_key = getattr(request.user, "rate_key", None)  # (an ApiPrincipal's: its key, or its staff user)
        if rate_key is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": rate_key}

    def allow_request(self, request, view) -> bool:
        tenant = getattr(request.user, "tenant", None)
        if tenant is not None and tenant.requests_per_minute:
            self.num_requests, self.duration = tenant.requests_per_minute, 60
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        window, into = divmod(time.time(), self.duration)
        count, self.before = window_counts(key, int(window), self.duration)
        self.overlap = 1 - into / self.duration  # of the previous window, still inside the sliding one
        self.estimate = count + self.before * self.overlap
        if self.estimate <= self.num_requests + 1e-9:  # (floating point: 3 * (1 - 1/3) is not 2)
            return True
        window_uncount(key, int(window))  # a refusal is rare: its extra round trip costs nothing that matters
        self.count = count - 1
        return False

    def wait(self) -> float:
        """Seconds until this request would be let in (it was not counted): the previous window's share
        shrinks as the sliding window moves on, and after this window its own count becomes the previous
        one and shrinks in turn; so at most twice the duration."""
        excess = self.estimate - self.num_requests
        if excess <= self.before * self.overlap:
            seconds = excess * self.duration / self.before
        else:
            room = (self.num_requests - 1) / self.count if self.count else 1.0
            seconds = self.overlap * self.duration + self.duration * max(0.0, 1 - room)
        return round(min(2.0 * self.duration, max(1.0, seconds)), 3)  # Retry-After rounds up: 70.000001 is 70
