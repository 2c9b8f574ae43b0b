"""Adapters that put the autellix core inside other serving engines.

* :mod:`autellix.adapters.vllm`: ``AutellixScheduler``, a vLLM 0.33 scheduler plug-in
  (``vllm serve MODEL --scheduler-cls autellix.adapters.vllm.AutellixScheduler``). Importing it
  imports vLLM (``pip install 'autellix[vllm]'``).
* :mod:`autellix.adapters.settings` and :mod:`autellix.adapters.tracker`: the engine-neutral parts
  (policy settings, the process table keyed by the engine's request ids), importable without vLLM.
"""
