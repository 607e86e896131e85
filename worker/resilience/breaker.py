"""A circuit breaker per provider, shared by every worker process and host through Redis.

A gateway in trouble should not be hammered by every worker at once, nor
should its messages burn their attempts against it. After
SMSQ_BREAKER_FAILURES retryable failures in a row (a 429 is back-pressure and
does not count) the breaker opens for SMSQ_BREAKER_COOLDOWN_SECONDS: nobody
calls that provider. Then it is half-open: exactly one worker gets a trial
batch (a lease, so a dead trial worker does not block it for ever); success
closes the breaker, failure opens it for another cool-down.

State lives in one Redis hash per provider and every change is a Lua script
that reads Redis `TIME`, so no worker's clock matters and two workers never
both take the trial. Without Redis the breaker lets calls through (the broker
is down too, and the rate limiter and retries still hold).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

import redis
from redis.commands.core import Script

from producer.settings import get_settings, provider_settings
from worker import redis_client

log = logging.getLogger("smsq.breaker")

KEY = "smsq:breaker:{}"
TRIAL_KEY = "smsq:breaker:{}:trial"
TRIAL_WAIT = 2.0  # seconds others wait while the half-open trial is out

# KEYS: state hash, trial lease. ARGV: trial lease in ms, token, longest wait while a
# trial is out (ms).
# Returns {state, wait_ms, failures}: 0 closed, 1 half-open (this caller holds the
# trial), 2 open; failures in a row so far (closed only).
_ALLOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then
  return {0, 0, tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')}
end
if now < open_until then return {2, open_until - now} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1]) then return {1, 0} end
-- the trial is out: look again soon (it may close the breaker in a moment)
local left = redis.call('PTTL', KEYS[2])
if left < 0 then left = 0 end
if left > tonumber(ARGV[3]) then left = tonumber(ARGV[3]) end
return {2, left}
"""

# KEYS: state hash, trial lease. ARGV: failures to open, cool-down ms, key ttl ms.
# Returns {opened (1/0), failures in a row, open_until ms}.
_FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local cooldown = tonumber(ARGV[2])
if open_until > 0 then
  if now < open_until then return {0, 0, open_until} end
  -- half-open: the trial (or a call that overlapped it) failed: open again
  redis.call('HSET', KEYS[1], 'open_until', now + cooldown, 'failures', 0)
  redis.call('HINCRBY', KEYS[1], 'opened', 1)
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, 0, now + cooldown}
end
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if n >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open_until', now + cooldown, 'failures', 0)
  redis.call('HINCRBY', KEYS[1], 'opened', 1)
  return {1, n, now + cooldown}
end
return {0, n, 0}
"""

# KEYS: state hash, trial lease. Returns 1 when this success closed an open breaker.
# A success seen while the breaker is still open (a call that began before it opened)
# changes nothing: only the trial, after the cool-down, may close it.
_SUCCESS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > 0 and now < open_until then return 0 end
redis.call('HSET', KEYS[1], 'open_until', 0, 'failures', 0)
redis.call('DEL', KEYS[2])
if open_until > 0 then return 1 end
return 0
"""

# KEYS: state hash. ARGV: seconds as ms. Open now, whatever the state (operators, tests).
_TRIP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[1]), 'failures', 0)
redis.call('HINCRBY', KEYS[1], 'opened', 1)
redis.call('DEL', KEYS[2])
return now + tonumber(ARGV[1])
"""

# KEYS: state hash. Returns {open_until, failures, now} for a read-only look.
_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
return {open_until, failures, now}
"""

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class Decision:
    """May this caller call the provider now? `trial`: it holds the half-open trial."""

    allowed: bool
    state: State
    wait: float = 0.0  # seconds until the cool-down ends (or the trial lease lapses)
    failures: int = 0  # failures in a row when it was decided (closed)

    @property
    def trial(self) -> bool:
        return self.allowed and self.state == "half_open"


@dataclass(frozen=True)
class Snapshot:
    state: State
    failures: int
    wait: float


def _client() -> redis.Redis:
    return redis_client.shared()


_SCRIPTS: dict[str, Script] = {}


def _script(client: redis.Redis, source: str) -> Script:
    """`source` as a redis-py Script: EVALSHA by its digest (loaded on a NOSCRIPT), not
    the whole text sent with every call. Called with the client of the moment."""
    script = _SCRIPTS.get(source)
    if script is None:
        script = _SCRIPTS[source] = client.register_script(source)
    return script


class Breaker:
    """The breaker of one provider. Cheap to build: all state is in Redis."""

    def __init__(
        self,
        provider: str,
        client: redis.Redis | None = None,
        *,
        failures: int | None = None,
        cooldown: float | None = None,
        trial_lease: float | None = None,
    ) -> None:
        settings = get_settings()
        self.provider = provider
        self.failures = failures or settings.breaker_failures
        self.cooldown = cooldown if cooldown is not None else settings.breaker_cooldown_seconds
        if trial_lease is None:
            # Long enough for one batch's HTTP call; a dead trial worker frees it by then.
            trial_lease = 3 * provider_settings(provider).timeout_seconds + 5
        self.trial_lease = trial_lease
        self._given = client
        self._keys = [KEY.format(provider), TRIAL_KEY.format(provider)]

    @property
    def _redis(self) -> redis.Redis:
        return self._given or _client()

    def _run(self, script: str, args: list[Any]) -> Any:
        client = self._redis
        return _script(client, script)(keys=self._keys, args=args, client=client)

    def _ttl_ms(self) -> int:
        return int(max(self.cooldown * 10, 3600) * 1000)

    def allow(self) -> Decision:
        """Closed: go. Open: wait. Half-open: the first caller gets the trial, others wait."""
        try:
            state, wait_ms, *failures = self._run(
                _ALLOW, [int(self.trial_lease * 1000), "trial", int(TRIAL_WAIT * 1000)]
            )
        except (redis.RedisError, OSError, RuntimeError):
            log.warning("breaker of %s unavailable; letting the call through", self.provider)
            return Decision(True, "closed")
        if int(state) == 0:
            return Decision(True, "closed", failures=int(failures[0]) if failures else 0)
        if int(state) == 1:
            return Decision(True, "half_open")
        return Decision(False, "open", int(wait_ms) / 1000)

    def record_failure(self) -> Snapshot | None:
        """A retryable failure (never a 429). Returns the snapshot when it opened the breaker."""
        try:
            opened, count, _open_until = self._run(
                _FAILURE, [self.failures, int(self.cooldown * 1000), self._ttl_ms()]
            )
        except (redis.RedisError, OSError, RuntimeError):
            log.warning("breaker of %s unavailable; failure not counted", self.provider)
            return None
        if int(opened):
            log.warning(
                "circuit breaker of %s opened for %.0fs",
                self.provider,
                self.cooldown,
                extra={"provider": self.provider},
            )
            return Snapshot("open", int(count), self.cooldown)
        return None

    def record_success(self, allowed: Decision | None = None) -> bool:
        """The gateway answered. Returns True when this closed an open (half-open) breaker.

        `allowed`: the decision this call went out under. Closed with no failures
        counted, a success changes nothing, so nothing is written (no round trip: the
        usual send pays one breaker call, not two). A failure another worker counted
        meanwhile is then reset by the next success that finds it."""
        if allowed is not None and allowed.state == "closed" and allowed.failures == 0:
            return False
        try:
            closed = bool(int(self._run(_SUCCESS, [])))
        except (redis.RedisError, OSError, RuntimeError):
            return False
        if closed:
            log.info(
                "circuit breaker of %s closed", self.provider, extra={"provider": self.provider}
            )
        return closed

    def release_trial(self) -> None:
        """Give the half-open trial back unused (rate-limit wait, 429, an unexpected error)."""
        with contextlib.suppress(redis.RedisError, OSError, RuntimeError):
            self._redis.delete(self._keys[1])

    def trip(self, seconds: float | None = None) -> None:
        """Open the breaker now for `seconds` (default: the cool-down): an operator's switch."""
        self._run(_TRIP, [int((self.cooldown if seconds is None else seconds) * 1000)])

    def reset(self) -> None:
        """Forget all state: closed, no failures counted."""
        self._redis.delete(*self._keys)

    def snapshot(self) -> Snapshot:
        """A read-only look: state, failures in a row, seconds of cool-down left."""
        try:
            open_until, failures, now = (int(v) for v in self._run(_PEEK, []))
        except (redis.RedisError, OSError, RuntimeError):
            return Snapshot("closed", 0, 0.0)
        if open_until == 0:
            return Snapshot("closed", failures, 0.0)
        if now < open_until:
            return Snapshot("open", failures, (open_until - now) / 1000)
        return Snapshot("half_open", failures, 0.0)

    def is_open(self) -> bool:
        """True while calls must not go (cool-down running); half-open counts as usable."""
        return self.snapshot().state == "open"
