"""One progress display for all chains, whichever process runs them.

Every chain counts its iterations and divergences in shared memory
(:meth:`Progress.callback`, PyMC's per-draw ``callback``); a thread of the
parent process reads the counts and shows them on standard error. In a
terminal that is one line rewritten in place; elsewhere (logs, CI,
notebooks) a start line, a line at each quarter and a closing line.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["Progress"]

#: Seconds between redraws of the terminal line, and between checks for a quarter passed.
_INTERVAL = 0.2


class Progress:
    """Progress of ``chains`` chains of ``tune + draws`` iterations each, counted across processes.

    Parameters
    ----------
    headline
        What is sampled, e.g. ``"NUTS (PyMC) on the collapsed posterior (4 coordinates)"``.
    chains, tune, draws
        The run's shape.
    processes
        Processes the chains run in (reported only).
    enabled
        False: silent (``progressbar=False``).
    counted
        False when the sampler shows its own progress (nutpie): only the first and last lines are written.
    stream
        Where to write; standard error by default.

    Use as a context manager around the sampling; the counters must be made
    (the object created) before the chain processes are forked, and the
    display starts on entry, so after them.
    """

    def __init__(
        self, headline: str, chains: int, tune: int, draws: int, processes: int, enabled: bool = True,
        counted: bool = True, stream: TextIO | None = None,
    ) -> None:
        self.headline, self.chains, self.tune, self.draws = headline, int(chains), int(tune), int(draws)
        self.processes, self.enabled, self.counted = int(processes), bool(enabled), bool(counted)
        self.stream = stream if stream is not None else sys.stderr
        self.counts = multiprocessing.RawArray("q", 2 * self.chains)  # per chain: iterations done, divergences
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    @property
    def tty(self) -> bool:
        """Whether the stream is a terminal (one line rewritten in place)."""
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def callback(self, chain: int) -> Callable[..., None] | None:
        """A ``pm.sample(callback=...)`` that counts chain ``chain``'s iterations and divergences; None when silent."""
        if not (self.enabled and self.counted):
            return None
        counts = self.counts

        def count(trace: Any = None, draw: Any = None) -> None:
            counts[2 * chain] = draw.draw_idx + 1
            if not draw.tuning and draw.stats and draw.stats[0].get("diverging"):
                counts[2 * chain + 1] += 1

        return count

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        if self.enabled:
            iters = f"{self.tune + self.draws} iterations ({self.tune} tuning)"
            self._write(f"{self.headline}: {_count(self.chains, 'chain')} x {iters} in {_count(self.processes, 'process')}\n")
            if self.counted:
                self._thread = threading.Thread(target=self._run, name="bayeslmm-progress", daemon=True)
                self._thread.start()
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.enabled:
            return
        if kind is None:
            done = self._done_line()
            self._write(f"\r{done}\x1b[K\n" if self.tty and self.counted else f"{done}\n")
        elif self.tty and self.counted:
            self._write("\n")

    def _totals(self) -> tuple[int, int, list[int]]:
        values = list(self.counts)
        per_chain = values[0::2]
        return sum(per_chain), sum(values[1::2]), per_chain

    def _done_line(self) -> str:
        seconds = time.perf_counter() - self._start
        line = f"Sampled {_count(self.chains, 'chain')} x {self.draws} draws after {self.tune} tuning steps in {seconds:.1f} s"
        return f"{line}; {_count(self._totals()[1], 'divergence')}" if self.counted else line

    def _status(self) -> str:
        done, divergences, per_chain = self._totals()
        total = self.chains * (self.tune + self.draws)
        seconds = time.perf_counter() - self._start
        line = f"{done}/{total} iterations ({100 * done / max(total, 1):.0f}%), {_count(divergences, 'divergence')}, {seconds:.1f} s"
        if 0 < done < total:
            line += f", about {seconds * (total - done) / done:.0f} s left"
        if self.tty and self.chains <= 8:
            line += "; chains " + " ".join(f"{100 * d / max(self.tune + self.draws, 1):.0f}%" for d in per_chain)
        return line

    def _run(self) -> None:
        total = self.chains * (self.tune + self.draws)
        quarter = 1
        while not self._stop.wait(_INTERVAL):
            if self.tty:
                self._write(f"\r{self._status()}\x1b[K")
            elif quarter < 4 and self._totals()[0] >= quarter * total / 4:
                self._write(f"  {self._status()}\n")
                quarter = 1 + int(4 * self._totals()[0] / max(total, 1))

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _count(n: int, noun: str) -> str:
    """``"1 chain"``, ``"4 chains"``, ``"2 processes"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('s') else 's'}"
