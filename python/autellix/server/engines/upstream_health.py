"""Which upstreams of the ``openai`` engine may take calls: outlier ejection and health-check results.

An upstream is **available** unless it is ejected. Two things eject it (as Envoy does):

* **passive outlier detection**: :data:`EJECT_AFTER` consecutive failed calls (connection refused
  or reset, a connect or read timeout, a 5xx, a broken stream; not a 4xx, which says the upstream
  is alive) eject it for a time that starts at :data:`BASE_EJECTION_S` and doubles with each
  ejection in a row, up to :data:`MAX_EJECTION_S`; then it is tried again (a success resets the
  doubling). The cap is short so that a recovered upstream takes load again within seconds even
  without active checks.
* **active health checks** (:mod:`.upstream_probe`): a failed check ejects it until a check
  passes; a passing check also lifts a passive ejection (Envoy's default), so an upstream that
  comes back takes load at the next check.

All times are the caller's clock (seconds); the state holds no clock and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

#: consecutive failed calls that eject an upstream
EJECT_AFTER = 3
#: first ejection, seconds; doubled per ejection in a row
BASE_EJECTION_S = 1.0
#: longest ejection, seconds
MAX_EJECTION_S = 4.0


@dataclass
class _Upstream:
    failures: int = 0  # consecutive failed calls
    streak: int = 0  # ejections in a row (the backoff's exponent)
    ejected_until: float = 0.0  # passive ejection ends (clock seconds)
    check_failed: bool = False  # the last health check failed


class UpstreamHealth:
    """Availability of ``n`` upstreams; :attr:`ejections` counts every ejection."""

    def __init__(self, n: int, *, check_interval: float = 0.0) -> None:
        self._states = [_Upstream() for _ in range(n)]
        #: seconds between health checks (0: none), for the Retry-After of "none available"
        self.check_interval = check_interval
        self.ejections = 0

    def available(self, upstream: int, now: float) -> bool:
        state = self._states[upstream]
        return not state.check_failed and now >= state.ejected_until

    def mask(self, now: float) -> list[bool]:
        """:meth:`available` of every upstream."""
        return [self.available(i, now) for i in range(len(self._states))]

    def up(self, now: float) -> int:
        return sum(self.mask(now))

    def succeeded(self, upstream: int) -> None:
        """A call reached the upstream and got an answer (a 4xx counts: the upstream is alive)."""
        state = self._states[upstream]
        state.failures = state.streak = 0

    def failed(self, upstream: int, now: float) -> bool:
        """A call failed at the upstream; whether this ejected it (it was available until now)."""
        state = self._states[upstream]
        if not self.available(upstream, now):
            return False  # already out: failures of calls sent before the ejection don't extend it
        state.failures += 1
        if state.failures < EJECT_AFTER:
            return False
        state.failures = 0
        state.ejected_until = now + min(MAX_EJECTION_S, BASE_EJECTION_S * 2**state.streak)
        state.streak += 1
        self.ejections += 1
        return True

    def checked(self, upstream: int, ok: bool, now: float) -> bool | None:
        """A health check's result; ``True`` if it brought the upstream back, ``False`` if it
        ejected it, ``None`` if availability did not change."""
        state = self._states[upstream]
        was = self.available(upstream, now)
        if ok:
            state.check_failed = False
            state.ejected_until = 0.0
            state.failures = 0
        else:
            state.check_failed = True
        now_available = self.available(upstream, now)
        if now_available == was:
            return None
        if not now_available:
            self.ejections += 1
        return now_available

    def retry_after(self, now: float) -> float:
        """Seconds until some upstream may be available again (at least 1)."""
        waits = [
            self.check_interval if state.check_failed else state.ejected_until - now for state in self._states
        ]
        return max(1.0, min(waits, default=1.0))
