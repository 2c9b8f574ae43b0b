"""Pure-Python PLAS schedulers: the references the Rust core is cross-checked against (the tests
beside this package) and measured against (``benches/bench_binding.py``). Plain CPython, no
extension modules besides ``heapq`` / ``bisect``; written to be fast (records are lists, lazy
deletion in heaps, accumulators instead of per-step charging). Never make them slower than the
straightforward one.

* :class:`PyPlasQueue` (``plas_queue``): the straightforward single-operation PLAS queue (heapq +
  dict). ``submit`` bisects the program's attained service over the boundaries and pushes
  ``(level, seq, call)``; ``admit`` pops the best call; ``complete`` adds the call's service to its
  program. This is the "pure Python" of docs/baselines.md, kept as lean as the policy allows.
* :class:`PyPlas` (``plas``): the whole policy of the Rust core (PLAS level at arrival, FCFS in a
  level, running before queued in a level, quantum demotion, promotion when ``(W_p + W_c) /
  (max(floor, T_p) + T_c) >= beta``, batch formation stopping at the first call that does not fit,
  preemption of running calls left out). Its step is Algorithm 1 of the paper: every live call is
  checked every step.
* :class:`PyPlasDue` (``plas_due``): a cleverer ``PyPlas`` that keeps heaps of due times (quantum
  expiries and starvation deadlines) as the Rust core does, so its step touches only the calls
  something happens to.

The package has a name no distribution uses and is imported with ``tests/reference`` put first on
``sys.path`` (by ``tests/reference/conftest.py`` and ``benches/_binding_reference.py``), never as
``tests.reference...``: a ``tests`` package some wheel installs could shadow that namespace.
"""

from autellix_reference.crosscheck import Check, crosscheck, crosscheck_cycle
from autellix_reference.plas import PyPlas
from autellix_reference.plas_due import PyPlasDue
from autellix_reference.plas_queue import PyPlasQueue

__all__ = ["Check", "PyPlas", "PyPlasDue", "PyPlasQueue", "crosscheck", "crosscheck_cycle"]
