"""Client-side rate limiting: token buckets for requests and tokens per minute, a shared pause
that every request honours after the server says ``Retry-After`` or runs out of quota, and an
adaptive concurrency limit that halves on 429 and creeps back up on success (AIMD), so an
unknown server limit costs a few 429s rather than a storm.

A 429 also sets a ceiling one below the window it was sent in: the limit creeps back up to it
but not past it, so once the server's cap is found the 429s stop. Only after
``PROBE_AFTER_WINDOWS`` times the ceiling in successes at the ceiling is one more slot tried (a
busy server may have room again), which costs at most one 429 per probe when it has not."""
from __future__ import annotations

import asyncio
import email.utils
import re
import time
from typing import Mapping

PROBE_AFTER_WINDOWS = 8
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """Seconds from ``Retry-After`` style values: ``"2"``, ``"1.5"``, ``"6m0s"``, ``"20ms"``, or an
    HTTP date."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value.replace(" ", ""):
        return sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """How long the server asked us to wait, from ``retry-after-ms`` or ``retry-after``."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    return parse_duration(headers.get("retry-after"))


class TokenBucket:
    """``rate`` units per second, holding at most ``capacity`` (the burst)."""

    def __init__(self, per_minute: float, burst_seconds: float = 1.0, clock=time.monotonic):
        self.rate = per_minute / 60.0
        # A one-second burst: servers often enforce per-minute limits in per-second slices.
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, amount: float) -> float:
        self._refill()
        # A request larger than the burst would wait forever; let it through on a full bucket.
        amount = min(amount, self.capacity)
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= min(amount, self.capacity)

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    def __init__(self, rpm: int | None = None, tpm: int | None = None, concurrency: int = 8, clock=time.monotonic):
        self.clock = clock
        self.requests = TokenBucket(rpm, clock=clock) if rpm else None
        self.tokens = TokenBucket(tpm, clock=clock) if tpm else None
        self.max_concurrency = concurrency
        self.limit = float(concurrency)  # adaptive; fractional so it can grow slowly
        self.ceiling = concurrency  # the limit grows up to this; lowered by 429s, raised by probes
        self.at_ceiling = 0  # successes since the limit reached the ceiling (or since the last probe)
        self.in_flight = 0
        self.paused_until = 0.0
        self.last_decrease = float("-inf")
        self._cond = asyncio.Condition()
        self.throttled = 0  # 429s seen

    async def acquire(self, tokens: int) -> None:
        """Wait for a concurrency slot, the shared pause and both buckets, then take them."""
        async with self._cond:
            while True:
                now = self.clock()
                wait = 0.0
                if self.in_flight >= max(1, int(self.limit)):
                    await self._cond.wait()
                    continue
                if self.paused_until > now:
                    wait = self.paused_until - now
                if self.requests is not None:
                    wait = max(wait, self.requests.wait_time(1))
                if self.tokens is not None:
                    wait = max(wait, self.tokens.wait_time(tokens))
                if wait <= 0:
                    break
                try:
                    # Wake early if a slot frees or a pause changes; re-check everything then.
                    await asyncio.wait_for(self._cond.wait(), timeout=wait)
                except asyncio.TimeoutError:
                    pass
            if self.requests is not None:
                self.requests.take(1)
            if self.tokens is not None:
                self.tokens.take(tokens)
            self.in_flight += 1

    async def release(self, reserved_tokens: int = 0, used_tokens: int | None = None, ok: bool = True) -> None:
        async with self._cond:
            self.in_flight -= 1
            if self.tokens is not None and used_tokens is not None and used_tokens < reserved_tokens:
                self.tokens.give_back(reserved_tokens - used_tokens)
            slots = int(self.limit)
            if ok and self.limit < self.ceiling:
                self.limit = min(self.ceiling, self.limit + 1.0 / max(1.0, self.limit))
            elif ok and self.ceiling < self.max_concurrency:
                self.at_ceiling += 1
                if self.at_ceiling >= PROBE_AFTER_WINDOWS * self.ceiling:
                    self.ceiling += 1  # probe: the limit may grow by one more slot
                    self.at_ceiling = 0
            # One slot freed: wake one waiter (FIFO), not the whole queue to re-check and sleep;
            # and one more for a slot the additive increase just opened, or nobody would use it.
            self._cond.notify(1 + max(0, int(self.limit) - slots))

    async def throttle(self, wait: float | None, sent_at: float | None = None) -> None:
        """A 429: halve concurrency and pause everyone for the server's ``Retry-After`` (or a
        short default), so the other in-flight workers don't hammer it too. 429s for requests
        sent before the last halving are echoes of the same overload and don't halve again.

        The ceiling becomes one below the window in force: the limit has only grown since this
        request was sent, so every request in flight with it was let through under at most this
        window, and the server refused that many. It is never below a concurrency cap: to refuse,
        the server had more than its cap in flight, all of them ours."""
        async with self._cond:
            self.throttled += 1
            if sent_at is None or sent_at >= self.last_decrease:
                self.ceiling = max(1, int(self.limit) - 1)
                self.at_ceiling = 0
                self.limit = max(1.0, self.limit / 2)
                self.last_decrease = self.clock()
            pause = wait if wait is not None else 1.0
            self.paused_until = max(self.paused_until, self.clock() + pause)
            self._cond.notify_all()

    async def observe(self, headers: Mapping[str, str] | None) -> None:
        """``x-ratelimit-remaining-*`` at zero: wait for the matching ``x-ratelimit-reset-*``."""
        if not headers:
            return
        pause = 0.0
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            if remaining is None:
                continue
            try:
                if float(remaining) > 0:
                    continue
            except ValueError:
                continue
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            pause = max(pause, reset if reset is not None else 1.0)
        if pause > 0:
            async with self._cond:
                self.paused_until = max(self.paused_until, self.clock() + pause)
                self._cond.notify_all()
