"""Client-side rate limiting: token buckets for requests and tokens per minute, a shared pause
that every request honours after the server says ``Retry-After`` or runs out of quota, and an
adaptive concurrency limit that finds a server's unknown concurrency cap by slow start.

Slow start: the limit begins at ``INITIAL_WINDOW`` (or the configured concurrency, if lower)
and grows by one slot per success, so it doubles every window of successes, until the first
429. Every request carries its *position*, how many of ours were in flight with it when it was
sent. A refusal at position ``p`` means the server already held ``p - 1`` or fewer requests of
ours and was full, so its cap is at most ``p - 1``: that becomes the ceiling, and the limit holds
there, just under the first refusal, instead of halving. The other refusals of the same burst
(sent before that decision) are echoes of it and count once.

Later, a 429 lowers the ceiling by one, not by half. Only after ``PROBE_AFTER_WINDOWS`` times
the ceiling in successes at the ceiling is one more slot tried (a busy server may have room
again), which costs at most one 429 per probe when it has not.

A refusal the concurrency explains (sent at or beyond a level the server has refused before,
or while slow start was still growing) costs the refused request its own ``Retry-After``: the
requests under the ceiling would be answered, so they don't wait. Any other 429 (a quota, or a
server whose room shrank) pauses every request for the server's ``Retry-After``."""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from typing import Mapping

PROBE_AFTER_WINDOWS = 8
INITIAL_WINDOW = 8  # slow start's first window, like TCP's initial window of ~10 segments
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
        self.limit = float(min(concurrency, INITIAL_WINDOW))  # adaptive; fractional so it can grow slowly
        self.ceiling = concurrency  # the limit grows up to this; lowered by 429s, raised by probes
        self.slow_start = True  # growing one slot per success until the first 429
        self.refused_at: int | None = None  # the ceiling the last 429 taught: positions beyond it are refused
        self.at_ceiling = 0  # successes since the limit reached the ceiling (or since the last probe)
        self.in_flight = 0
        self.paused_until = 0.0
        self.last_decrease = float("-inf")
        self._cond = asyncio.Condition()
        self.throttled = 0  # 429s seen

    async def acquire(self, tokens: int) -> int:
        """Wait for a concurrency slot, the shared pause and both buckets, then take them.
        Returns the request's position: how many of ours are in flight with it, itself included."""
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
            return self.in_flight

    async def release(self, reserved_tokens: int = 0, used_tokens: int | None = None, ok: bool = True) -> None:
        async with self._cond:
            self.in_flight -= 1
            if self.tokens is not None and used_tokens is not None and used_tokens < reserved_tokens:
                self.tokens.give_back(reserved_tokens - used_tokens)
            slots = int(self.limit)
            if ok and self.slow_start:
                self.limit = min(self.ceiling, self.limit + 1.0)  # one more per success: x2 per window
            elif ok and self.limit < self.ceiling:
                self.limit = min(self.ceiling, self.limit + 1.0 / max(1.0, self.limit))
            elif ok and self.ceiling < self.max_concurrency:
                self.at_ceiling += 1
                if self.at_ceiling >= PROBE_AFTER_WINDOWS * self.ceiling:
                    self.ceiling += 1  # probe: the limit may grow by one more slot
                    self.at_ceiling = 0
            # One slot freed: wake one waiter (FIFO), not the whole queue to re-check and sleep;
            # and one more for each slot the increase just opened, or nobody would use them.
            self._cond.notify(1 + max(0, int(self.limit) - slots))

    async def throttle(self, wait: float | None, sent_at: float | None = None, position: int | None = None) -> None:
        """A 429 for a request sent at ``sent_at`` (the limiter's clock) in ``position``.

        The first one ends slow start: the ceiling becomes ``position - 1``, the most the server
        can hold (it was full with at most that many of ours), or one below the window in force
        when the position is unknown. A later one lowers the ceiling by one. Either way the limit
        holds at the ceiling, and 429s for requests sent before that decision are echoes of the
        same overload that change nothing. A 429 the concurrency doesn't explain also pauses
        everyone for the server's ``Retry-After`` (or a short default)."""
        async with self._cond:
            self.throttled += 1
            explained = position is not None and (
                self.slow_start or self.refused_at is None or position - 1 >= self.refused_at)
            if sent_at is None or sent_at >= self.last_decrease:
                if self.slow_start and position is not None:
                    ceiling = position - 1
                else:
                    ceiling = min(self.ceiling, int(self.limit)) - 1
                self.ceiling = max(1, min(self.ceiling, ceiling))
                self.limit = min(self.limit, float(self.ceiling))
                self.refused_at = self.ceiling
                self.slow_start = False
                self.at_ceiling = 0
                self.last_decrease = self.clock()
            if not explained:
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
