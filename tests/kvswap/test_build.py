"""The just-in-time build of the KV-swap ops (autellix.kvswap._build): cache layout, toolkit
lookup, the reference fallback, and a real nvcc compile of autellix/csrc/swap_blocks_cuda.cu without a GPU.

The nvcc compile runs whenever torch is a CUDA build, and FAILS (rather than skips) when no
matching nvcc is found: CI installs one through the `vllm` extra (cuda-toolkit pinned to torch's
CUDA), so a missing toolkit is a CI break, not a reason to stop checking the CUDA source. Set
AUTELLIX_SKIP_CUDA_BUILD=1 to skip it deliberately (e.g. a machine without the toolkit). With a
CPU-only torch there are no CUDA headers to compile against, so it skips with that reason."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(
    code: str, env: dict[str, str] | None = None, timeout: float = 280
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_import_does_not_import_torch() -> None:
    """torch is optional: importing autellix and autellix.kvswap must not pull it in."""
    proc = _run(
        """
        import sys
        import autellix, autellix.kvswap, autellix.kvswap.ops
        assert "torch" not in sys.modules, "autellix imported torch"
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_sources_ship_inside_the_package() -> None:
    """The C++/CUDA sources have one real location, inside the package (python/autellix/csrc/):
    the wheel carries them as package files, and the JIT build reads them from there."""
    shipped = ROOT / "python" / "autellix" / "csrc"
    sources = sorted(p.name for p in shipped.iterdir())
    assert sources == ["swap_blocks.cpp", "swap_blocks.h", "swap_blocks_cuda.cu"]
    assert not any((shipped / name).is_symlink() for name in sources)
    assert not (ROOT / "csrc").exists(), "a second copy of the sources outside the package"


# Everything below needs torch (the tests above run without it).
try:
    import torch
except ImportError:
    torch = None

from autellix.kvswap import _build  # noqa: E402  (imports torch only when called)

needs_torch = pytest.mark.skipif(torch is None, reason="autellix.kvswap's build needs torch")


@needs_torch
def test_csrc_dir_has_the_sources() -> None:
    src = _build.csrc_dir()
    for name in ("swap_blocks.cpp", "swap_blocks.h", "swap_blocks_cuda.cu"):
        assert (src / name).is_file()


@needs_torch
def test_cache_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AUTELLIX_OPS_CACHE", "TORCH_EXTENSIONS_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert _build.cache_root() == Path.home() / ".cache" / "autellix" / "ops"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _build.cache_root() == tmp_path / "xdg" / "autellix" / "ops"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "te"))
    assert _build.cache_root() == tmp_path / "te" / "autellix"
    monkeypatch.setenv("AUTELLIX_OPS_CACHE", str(tmp_path / "ops"))
    assert _build.cache_root() == tmp_path / "ops"


@needs_torch
def test_cache_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import autellix

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    a = tmp_path / "a.cpp"
    a.write_text("int x;")
    cpu = _build.cache_key("cpu", [a], ["-O3"])
    assert cpu.startswith(f"{autellix.__version__}-{torch.__version__}-cpu-")
    assert _build.cache_key("cpu", [a], ["-O3"]) == cpu  # stable
    assert _build.cache_key("cpu", [a], ["-O2"]) != cpu  # flags are part of it
    a.write_text("int y;")
    assert _build.cache_key("cpu", [a], ["-O3"]) != cpu  # and the sources
    if torch.version.cuda is not None:
        cuda = _build.cache_key("cuda", [a], ["-O3"])
        assert f"-cu{torch.version.cuda.replace('.', '')}-sm80-90ptx-" in cuda


@needs_torch
def test_cuda_archs_and_gencode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0 9.0a;10.0+PTX")
    assert _build.cuda_archs() == ["8.0", "9.0a", "10.0+PTX"]
    assert _build._gencode_flags(["9.0a", "10.0+PTX"]) == [
        "-gencode=arch=compute_90a,code=sm_90a",
        "-gencode=arch=compute_100,code=sm_100",
        "-gencode=arch=compute_100,code=compute_100",
    ]
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    if not torch.cuda.is_available():
        assert _build.cuda_archs() == ["9.0"]


@needs_torch
def test_backend_env(tmp_path: Path) -> None:
    env = {"AUTELLIX_OPS_BACKEND": "reference", "AUTELLIX_OPS_CACHE": str(tmp_path)}
    proc = _run(
        """
        import torch
        from autellix.kvswap import ops
        dst = torch.zeros(2, 3)
        ops.swap_blocks(torch.ones(2, 3), dst, [(1, 0)])
        print(ops.ops_backend(), dst.sum().item())
        """,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["reference", "3.0"]
    assert not list(tmp_path.iterdir())  # nothing compiled

    proc = _run("from autellix.kvswap import ops; ops.ops_backend()", {"AUTELLIX_OPS_BACKEND": "fast"})
    assert proc.returncode == 0
    assert "AUTELLIX_OPS_BACKEND='fast'" in proc.stderr and "reference" in proc.stderr


@needs_torch
def test_failed_build_falls_back_to_reference(tmp_path: Path) -> None:
    """No working compiler: one warning, then the pure-torch copy does the work."""
    env = {"AUTELLIX_OPS_BACKEND": "cpu", "AUTELLIX_OPS_CACHE": str(tmp_path), "CXX": "/bin/false"}
    proc = _run(
        """
        import torch
        from autellix.kvswap import ops
        dst = torch.zeros(3, 2)
        ops.swap_blocks(torch.arange(6.0).reshape(3, 2), dst, [(2, 0), (0, 1)])
        ops.swap_blocks(torch.arange(6.0).reshape(3, 2), dst, [(1, 2)])
        print(ops.ops_backend(), dst.flatten().tolist())
        """,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "reference"
    assert "[4.0, 5.0, 0.0, 1.0, 2.0, 3.0]" in proc.stdout
    assert proc.stderr.count("using the pure-torch reference copy") == 1, proc.stderr
    assert "building the cpu KV-swap ops failed" in proc.stderr


@needs_torch
def test_cuda_source_compiles_with_nvcc() -> None:
    """CI's compile check of autellix/csrc/swap_blocks_cuda.cu: build the CUDA variant of the ops (no GPU
    needed), load it (the library registers without a GPU) and run its CPU kernel."""
    if os.environ.get("AUTELLIX_SKIP_CUDA_BUILD") == "1":
        pytest.skip("AUTELLIX_SKIP_CUDA_BUILD=1")
    if torch.version.cuda is None:
        pytest.skip("torch is the CPU-only build: no CUDA headers to compile csrc/*.cu against")
    # A subprocess, because a process holds one build of the ops and the tests here use the CPU one.
    proc = _run(
        """
        import torch
        from autellix.kvswap import _build, ops
        print("library", _build.build_ops("cuda"))
        assert ops.ops_backend() == "cuda", ops.ops_backend()
        assert torch._C._dispatch_has_kernel_for_dispatch_key("autellix::swap_blocks_multi", "CUDA")
        src, dst = torch.arange(12.0).reshape(4, 3), torch.zeros(2, 3)
        torch.ops.autellix.swap_blocks.default(src, dst, torch.tensor([[3, 0], [1, 1]]), "kernel")
        assert dst.tolist() == [[9.0, 10.0, 11.0], [3.0, 4.0, 5.0]], dst
        print("ok")
        """,
        {"AUTELLIX_OPS_BACKEND": "cuda"},
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
