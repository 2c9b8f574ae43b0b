"""``autellix serve --engine vllm`` with the real ``vllm serve`` on a machine without a GPU.

vLLM cannot load a model here, but its CLI can parse the command autellix builds: on vLLM's CPU
platform (``VLLM_TARGET_DEVICE=cpu``) it logs the arguments it took, then fails on a model
directory whose ``config.json`` names no model. So this checks, against the real vLLM 0.33, that
the plug-in and its settings reach vLLM's config, and that a vLLM server that dies at start is
reported with its own error and a non-zero exit, not a hang. The end-to-end run is in
``tests/gpu/test_vllm_serve.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from autellix import SchedulerConfig
from autellix.server.engines.vllm import SCHEDULER_CLS


def test_vllm_takes_the_plugin_and_a_failed_start_is_reported(tmp_path: Path) -> None:
    model = tmp_path / "not-a-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    env = dict(
        os.environ,
        VLLM_TARGET_DEVICE="cpu",
        HF_HUB_OFFLINE="1",
        VLLM_CACHE_ROOT=str(tmp_path / "cache"),
    )
    argv = [sys.executable, "-m", "autellix", "serve", "--engine", "vllm", "--vllm-model", str(model)]
    argv += ["--policy", "atlas", "--port", "0", "--vllm-args=--max-model-len 512"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    err = done.stderr
    assert done.returncode != 0
    taken = next(line for line in err.splitlines() if "non-default args" in line)
    assert f"'scheduler_cls': '{SCHEDULER_CLS}'" in taken
    core = SchedulerConfig()
    plugin = {
        "policy": "atlas",
        "program_ttl": core.program_ttl,
        "first_boundary": None,
        "starvation_beta": core.starvation_beta,
    }
    assert f"'additional_config': {{'autellix': {plugin!r}}}" in taken
    assert "'max_model_len': 512" in taken and f"'served_model_name': ['{model}']" in taken
    assert "vllm 0 exited with code 1 before it was ready" in err
    assert "Should have a `model_type` key" in err  # vLLM's own reason, relayed
