"""Client-side rate limiting: token buckets for requests and tokens per minute, a shared pause
that every request honours after the server says ``Retry-After`` or runs out of quota, and an
adaptive concurrency limit that finds a server's unknown concurrency cap by slow start.

Slow start: the limit begins at ``INITIAL_WINDOW`` (or the configured concurrency, if lower)
and grows by one slot per success, so it doubles every window of successes, until the first
429. A refused request tells how full the server was: it held its cap of our requests, and we
had ``position - 1`` others in flight when it was sent. That bound becomes the ceiling, and the
limit holds there, just under the first refusal, instead of halving. The refusals of that burst
(every request sent while slow start grew) come back in any order; the tightest bound among
them wins, never under half the window in force at the first one, and however many there are
they count as that one measurement.

Later, a 429 lowers the ceiling by one, not by half. Only after ``PROBE_AFTER_WINDOWS`` times
the ceiling in successes at the ceiling is one more slot tried (a busy server may have room
again), which costs at most one 429 per probe when it has not.

A refusal the concurrency explains (sent while slow start grew, or at the ceiling) costs the
refused request its own ``Retry-After``: the requests under the ceiling would be answered, so
they don't wait. Any other 429 (a quota, or a server whose room shrank) pauses every request
for the server's ``Retry-After``."""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Ticket:
    """One request let through: when it was sent (the limiter's clock), how many of ours were in
    flight with it (itself included) and how many were let through before it (itself included)."""

    sent_at: float
    position: int
    seq: int


class RateLimiter:
    def __init__(self, rpm: int | None = None, tpm: int | None = None, concurrency: int = 8, clock=time.monotonic):
        self.clock = clock
        self.requests = TokenBucket(rpm, clock=clock) if rpm else None
        self.tokens = TokenBucket(tpm, clock=clock) if tpm else None
        self.max_concurrency = concurrency
        self.limit = float(min(concurrency, INITIAL_WINDOW))  # adaptive; fractional so it can grow slowly
        self.ceiling = concurrency  # the limit grows up to this; lowered by 429s, raised by probes
        self.slow_start = True  # growing one slot per success until the first 429
        self.slow_start_ended = float("-inf")
        self.floor = 1  # the least a refusal of slow start's burst can set the ceiling to
        self.measured = False  # a refusal's position (not only the window) has bounded the ceiling
        self.at_ceiling = 0  # successes since the limit reached the ceiling (or since the last probe)
        self.in_flight = 0
        self.sent = 0  # requests let through so far
        self.paused_until = 0.0
        self.last_decrease = float("-inf")
        self._cond = asyncio.Condition()
        self.throttled = 0  # 429s seen

    async def acquire(self, tokens: int) -> Ticket:
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
            self.sent += 1
            return Ticket(self.clock(), self.in_flight, self.sent)

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

    async def throttle(self, wait: float | None, ticket: Ticket | None = None) -> None:
        """A 429 for the request let through with ``ticket``.

        When it was refused, the server was full with the ``position - 1`` requests of ours in
        flight with it, or fewer: that bounds its cap. Refusals of requests sent while slow start
        was growing end it, and the tightest of their bounds becomes the ceiling (they arrive in
        any order, but they are one measurement: the burst never lowers it further). Requests
        sent after it may have reached the server first (a new connection is slow to be served):
        when more were sent after it than were in flight with it, its position says little, and
        only the window in force bounds the cap; the burst then lasts until a fresh refusal has
        measured the cap. And no bound goes below half the window in force
        at the first refusal: the window before it was answered whole (TCP's slow start ends at
        half its window for the same reason).

        A later 429 lowers the ceiling by one, once per window: 429s for requests sent before
        that decision are echoes of the same overload. The limit holds at the ceiling. A refusal
        the concurrency doesn't explain (sent under the ceiling: a quota, or a server whose room
        shrank) also pauses everyone for the server's ``Retry-After`` (or a short default)."""
        async with self._cond:
            self.throttled += 1
            now = self.clock()
            if ticket is not None and (self.slow_start or ticket.sent_at < self.slow_start_ended
                                       or not self.measured):
                explained = True
                if self.slow_start:
                    self.floor = max(1, int(self.limit) // 2)
                window = int(self.limit) - 1 if self.slow_start else self.ceiling
                fresh = self.sent - ticket.seq < ticket.position
                self.measured = self.measured or fresh
                bound = max(self.floor, min(window, ticket.position - 1 if fresh else window))
                if self.slow_start or bound < self.ceiling:
                    self._hold(min(self.ceiling, bound), now)
            else:
                explained = ticket is not None and ticket.position >= self.ceiling
                if ticket is None or ticket.sent_at >= self.last_decrease:
                    self._hold(min(self.ceiling, int(self.limit)) - 1, now)
            if self.slow_start:
                self.slow_start = False
                self.slow_start_ended = now
            if not explained:
                pause = wait if wait is not None else 1.0
                self.paused_until = max(self.paused_until, now + pause)
            self._cond.notify_all()

    def _hold(self, ceiling: int, now: float) -> None:
        """A new ceiling from a 429: the limit holds there (at once, not by halves)."""
        self.ceiling = max(1, ceiling)
        self.limit = min(self.limit, float(self.ceiling))
        self.at_ceiling = 0
        self.last_decrease = now

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
