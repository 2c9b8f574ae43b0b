"""Adapters that put the autellix core inside other serving engines.

* :mod:`autellix.adapters.vllm`: ``AutellixScheduler``, a vLLM 0.33 scheduler plug-in
  (``vllm serve MODEL --scheduler-cls autellix.adapters.vllm.AutellixScheduler``). Importing it
  imports vLLM (``pip install 'autellix[vllm]'``).
* :mod:`autellix.adapters.settings` and :mod:`autellix.adapters.tracker`: the engine-neutral parts
  (policy settings, the process table keyed by the engine's request ids, the clients' hints),
  importable without vLLM.
* :mod:`autellix.adapters.kv_retention`: program contexts held in an engine's block pool as the
  core's KV planner decides (``kv_policy`` ``autellix``); :mod:`autellix.adapters.kv_metrics`:
  their ``autellix:*`` Prometheus metrics; :mod:`autellix.adapters.kv_host`: the planner's host
  tier over vLLM's CPU offloading connector (imports vLLM).
* :mod:`autellix.adapters.control`: the plug-in's control channel for the front's finish hints
  (stdlib only).
"""
