"""When to read an energy counter that is costly to read and updates on a steady tick.

On an H100, ``nvmlDeviceGetTotalEnergyConsumption`` costs about 3.8 ms of CPU per call (a round trip
to the GPU's firmware), while the counter itself only changes every 100 ms: reading it every 10 ms
would cost ~38 % of a core to learn nothing nine times in ten. The instantaneous power field costs
7 µs and is read every poll.

``CounterReads`` reads on every poll until it has seen updates land between two consecutive reads
(*tight* brackets), learns the tick's period and phase from them, and from then on reads only around
every n-th predicted tick (n ticks ≈ ``anchor_s``): a first read just before it, then every poll until
the value changes. A change is recorded only when it is tight, so every change point's time is known
to within one poll; a prediction that misses (no change 3 periods after it) drops back to reading on
every poll until locked again. With ``anchor_s = 0`` it reads on every poll (cheap counters: RAPL,
the estimate).
"""

from __future__ import annotations

from collections import deque

import numpy as np

#: Start reading one poll plus this long before a predicted tick: the first read then lands before the
#: tick despite its jitter (±6 ms seen on an H100, the 3.8 ms read included).
JITTER_S = 0.006
#: A change counts as tight when the read before it is at most this long before.
TIGHT_S = 0.035
#: Ticks the period and phase are fitted to, and the fewest before predicting.
FIT_TICKS = 24
MIN_TICKS = 5
#: A prediction is abandoned when no change has come this many periods after it.
MISS_PERIODS = 3.0


class CounterReads:
    """Per device: decides on which polls to read the counter, and which changes to record."""

    def __init__(self, anchor_s: float = 0.0, poll_s: float = 0.01) -> None:
        self.anchor_s = anchor_s
        self._lead_s = poll_s + JITTER_S
        self.period_s: float | None = None  # the counter's update period, learnt
        self.next_tick_s: float | None = None  # the predicted anchor tick; None while unlocked
        self._ticks: deque[float] = deque(maxlen=FIT_TICKS)
        self._last_read_s: float | None = None
        self._last_value: float | None = None
        self.reads = 0

    @property
    def locked(self) -> bool:
        return self.next_tick_s is not None

    def due(self, now_s: float) -> bool:
        """Whether this poll should read the counter."""
        return self.next_tick_s is None or now_s >= self.next_tick_s - self._lead_s

    def observe(self, t_s: float, value: float) -> float | None:
        """Take a read made at ``t_s``. Returns the change point's gap (s) to record it, or None to not.

        The gap is the time since the read before it: the update happened within it.
        """
        self.reads += 1
        prev_t, prev_v = self._last_read_s, self._last_value
        self._last_read_s, self._last_value = t_s, value
        if prev_t is None:
            return 0.0  # the first read: the baseline
        if value == prev_v:
            period = self.period_s
            if self.next_tick_s is not None and period is not None and t_s > self.next_tick_s + MISS_PERIODS * period:
                self.next_tick_s = None  # lost the tick: read every poll until locked again
            return None
        gap = t_s - prev_t
        if gap > TIGHT_S:
            return None  # the value moved while we were not looking: a reference for the next read
        if self.anchor_s > 0:
            self._learn(t_s - 0.5 * gap)
        return gap

    def _learn(self, tick_s: float) -> None:
        """Fit tick = φ + n·T to the recent ticks seen (bracket midpoints) and predict the next anchor.

        Midpoints are off by up to half a poll and ticks jitter, so one tick says little; a least-squares
        line through the last ``FIT_TICKS`` of them says a lot. Until ``MIN_TICKS`` are seen (on every
        poll, so they are consecutive) the period is their median spacing.
        """
        ticks = self._ticks
        ticks.append(tick_s)
        if len(ticks) < MIN_TICKS:
            return
        t = np.fromiter(ticks, dtype=np.float64)
        period = self.period_s if self.period_s is not None else float(np.median(np.diff(t)))
        if not period > TIGHT_S:
            ticks.clear()
            return
        n = np.round((t - t[-1]) / period)
        if len(np.unique(n)) < 2:
            return
        slope, intercept = np.polyfit(n, t, 1)
        residual = np.abs(t - (intercept + slope * n)).max()
        if residual > 0.25 * slope or not slope > TIGHT_S:
            # The ticks do not line up (a wrong period, a changed clock): start learning afresh.
            self.period_s = self.next_tick_s = None
            ticks.clear()
            ticks.append(tick_s)
            return
        self.period_s = float(slope)
        k = max(1, round(self.anchor_s / self.period_s))
        self.next_tick_s = float(intercept) + k * self.period_s
