"""Just-in-time build of the ``torch.ops.autellix`` KV-swap ops (C++/CUDA sources in ``autellix/csrc/``).

The ops are compiled by ``torch.utils.cpp_extension.load`` on first use, not inside the Rust
wheel: they must match the user's torch ABI and CUDA version, which the wheel cannot know. A
build takes 15-20 s (CPU) or 45-60 s (CUDA) once; the shared library is cached under::

    ~/.cache/autellix/ops/<autellix version>-<torch version>-<cpu | cuXY-smZZ>-<source hash>/

The cache root is ``$AUTELLIX_OPS_CACHE`` if set, else ``$TORCH_EXTENSIONS_DIR/autellix``, else
``$XDG_CACHE_HOME/autellix/ops`` (default ``~/.cache``). A file lock per cache entry lets only one
process build it; the others wait and load the result.

Which build: the ``torch.ops.autellix`` namespace registers once per process, so one library
holds every kernel. The CUDA build also contains the CPU kernels; it is used when CUDA is
available (or ``AUTELLIX_OPS_BACKEND=cuda`` asks for it, which compiles without a GPU), else the
CPU build. ``AUTELLIX_OPS_BACKEND=reference`` skips compiling. If the build fails (no compiler,
no ninja, no nvcc matching torch's CUDA), :func:`load_ops` logs one warning and the callers fall
back to the pure-torch reference.

CUDA toolkit: ``$CUDA_HOME`` if set; else the pip toolkit in this environment
(``cuda-toolkit[nvcc,cudart,cccl]``, pinned to torch's CUDA version by autellix's ``vllm`` extra)
when its nvcc version matches ``torch.version.cuda``; else whatever torch finds (``nvcc`` on
``PATH``, ``/usr/local/cuda``). GPU architectures: ``$TORCH_CUDA_ARCH_LIST`` if set, else the
visible GPUs' compute capabilities, else ``9.0`` (a compile check without a GPU).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Literal

from autellix.exceptions import OpsBuildError

Backend = Literal["cuda", "cpu", "reference"]
Variant = Literal["cuda", "cpu"]

log = logging.getLogger("autellix.kvswap")

LIB_NAME = "autellix_kvswap_ops"
BACKEND_ENV = "AUTELLIX_OPS_BACKEND"
CACHE_ENV = "AUTELLIX_OPS_CACHE"
_CPU_SOURCES = ("swap_blocks.cpp",)
_CUDA_SOURCES = ("swap_blocks.cpp", "swap_blocks_cuda.cu")
_HEADERS = ("swap_blocks.h",)
_CFLAGS = ["-O3"]
_CUDA_CFLAGS = ["-O3"]
_DEFAULT_ARCHS = ["9.0"]  # compile check without a GPU (CI): Hopper

_lock = threading.Lock()
_backend: Backend | None = None


def csrc_dir() -> Path:
    """The C++/CUDA sources, ``autellix/csrc/`` (package files: the wheel ships them)."""
    src = Path(__file__).resolve().parent.parent / "csrc"
    if not (src / _CPU_SOURCES[0]).is_file():
        raise OpsBuildError(f"autellix's C++ sources ({_CPU_SOURCES[0]}) are missing from {src}")
    return src


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "autellix"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autellix" / "ops"


def cuda_archs() -> list[str]:
    """Compute capabilities to compile for, as ``TORCH_CUDA_ARCH_LIST`` spells them (``9.0``, ``8.0+PTX``)."""
    import torch

    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(";", " ").split()
    if env:
        return env
    if torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return [f"{major}.{minor}" for major, minor in sorted(caps)]
    return list(_DEFAULT_ARCHS)


def _gencode_flags(archs: list[str]) -> list[str]:
    # Passing -gencode ourselves makes torch skip its own arch guess (every arch torch supports
    # when no GPU is visible: many minutes of nvcc).
    flags = []
    for arch in archs:
        number = arch.removesuffix("+PTX").replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


def pip_cuda_home() -> Path | None:
    """The pip CUDA toolkit of this environment (``nvidia/cu13``) if its nvcc matches torch's CUDA.

    A mismatched nvcc fails on torch's CUDA headers ("compiler and headers incompatible"), so a
    newer nvcc pulled in by other packages is not used."""
    import torch

    if torch.version.cuda is None:
        return None
    try:
        nvcc_version = importlib.metadata.version("nvidia-cuda-nvcc")
    except importlib.metadata.PackageNotFoundError:
        return None
    if nvcc_version.split(".")[:2] != torch.version.cuda.split(".")[:2]:
        return None
    spec = importlib.util.find_spec("nvidia")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in locations:
        home = Path(root) / f"cu{torch.version.cuda.split('.')[0]}"
        if (home / "bin" / "nvcc").is_file():
            return home
    return None


def cache_key(variant: Variant, sources: list[Path], flags: list[str]) -> str:
    """``<autellix version>-<torch version>-<cpu | cuXY-smZZ>-<hash of sources and flags>``."""
    import torch

    from autellix._core import __version__

    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join(flags).encode())
    if variant == "cuda":
        archs = "-".join(a.replace(".", "").replace("+PTX", "ptx") for a in cuda_archs())
        target = f"cu{(torch.version.cuda or '').replace('.', '')}-sm{archs}"
    else:
        target = "cpu"
    return f"{__version__}-{torch.__version__}-{target}-{digest.hexdigest()[:16]}"


def _notice(message: str) -> None:
    # A 15-60 s pause needs an explanation even when the application configured no logging.
    if log.hasHandlers():
        log.info(message)
    else:
        print(f"autellix: {message}", file=sys.stderr, flush=True)


def _ensure_ninja() -> None:
    if shutil.which("ninja"):
        return
    try:
        import ninja  # the PyPI package ships the binary
    except ImportError as exc:
        raise OpsBuildError("building autellix's ops needs ninja: pip install ninja") from exc
    os.environ["PATH"] = str(ninja.BIN_DIR) + os.pathsep + os.environ.get("PATH", "")


def _cudart_link_dir(cuda_home: Path, build_dir: Path) -> list[str]:
    """``-L`` for a directory with ``libcudart.so``: torch links ``-lcudart`` but the pip toolkit
    ships only ``libcudart.so.<major>``, so link against a symlink to it."""
    for lib in ("lib64", "lib"):
        if (cuda_home / lib / "libcudart.so").exists():
            return []
    for lib in ("lib64", "lib"):
        versioned = sorted((cuda_home / lib).glob("libcudart.so.*"))
        if versioned:
            link_dir = build_dir / "cudart"
            link_dir.mkdir(parents=True, exist_ok=True)
            link = link_dir / "libcudart.so"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(versioned[0])
            return [f"-L{link_dir}"]
    raise OpsBuildError(f"no libcudart.so in {cuda_home}/lib64 or {cuda_home}/lib")


def build_ops(variant: Variant, *, verbose: bool = False) -> Path:
    """Compile (or find in the cache) and load the ops library; returns its path.

    Raises :class:`OpsBuildError` with the compiler's output when the build fails, and when a
    different build of the ops is already loaded in this process."""
    import torch

    if _registered() is not None:
        raise OpsBuildError(f"torch.ops.autellix is already loaded ({_registered()} build) in this process")
    _ensure_ninja()
    import filelock
    import torch.utils.cpp_extension as cpp_extension

    src = csrc_dir()
    names = _CUDA_SOURCES if variant == "cuda" else _CPU_SOURCES
    sources = [src / name for name in names]
    cuda_cflags = _CUDA_CFLAGS + _gencode_flags(cuda_archs()) if variant == "cuda" else []
    key = cache_key(variant, sources + [src / h for h in _HEADERS], _CFLAGS + cuda_cflags)
    root = cache_root()
    build_dir = root / key
    root.mkdir(parents=True, exist_ok=True)
    library = build_dir / f"{LIB_NAME}_{variant}.so"

    cuda_home_before = cpp_extension.CUDA_HOME
    lock = filelock.FileLock(str(root / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        _notice(f"waiting for another process building the {variant} ops in {build_dir}")
        lock.acquire()
    try:
        ldflags: list[str] = []
        if variant == "cuda":
            if torch.version.cuda is None:
                raise OpsBuildError(
                    "the CUDA build of the ops needs torch's CUDA build; this torch is CPU-only"
                )
            env_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
            cuda_home = Path(env_home) if env_home else pip_cuda_home()
            if cuda_home is None:
                cuda_home = Path(cpp_extension.CUDA_HOME) if cpp_extension.CUDA_HOME else None
            if cuda_home is None or not (cuda_home / "bin" / "nvcc").is_file():
                raise OpsBuildError(
                    f"no nvcc found for torch's CUDA {torch.version.cuda}: set CUDA_HOME or "
                    f'pip install "cuda-toolkit[nvcc,cudart,cccl]=={torch.version.cuda}.*"'
                )
            # torch reads this module global at build time; restored in `finally`.
            cpp_extension.CUDA_HOME = str(cuda_home)
            build_dir.mkdir(parents=True, exist_ok=True)
            ldflags = _cudart_link_dir(cuda_home, build_dir)
        compiling = not library.exists()
        if compiling:
            _notice(f"compiling the {variant} KV-swap ops into {build_dir} (first use only, ~15-60 s)")
        build_dir.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                path = cpp_extension.load(
                    name=f"{LIB_NAME}_{variant}",
                    sources=[str(s) for s in sources],
                    extra_cflags=_CFLAGS,
                    extra_cuda_cflags=cuda_cflags,
                    extra_ldflags=ldflags,
                    build_directory=str(build_dir),
                    with_cuda=variant == "cuda",
                    is_python_module=False,
                    verbose=verbose,
                )
            except Exception as exc:
                raise OpsBuildError(f"building the {variant} KV-swap ops failed: {exc}") from exc
        for w in caught:  # torch's toolchain remarks; not the caller's business
            log.debug("torch.utils.cpp_extension: %s", w.message)
        if compiling:
            _notice(f"{variant} KV-swap ops built in {time.monotonic() - start:.1f} s: {path}")
        else:
            log.debug("loaded the cached %s KV-swap ops: %s", variant, path)
        return Path(str(path))
    finally:
        cpp_extension.CUDA_HOME = cuda_home_before
        lock.release()


def _registered() -> Variant | None:
    """Which build of the ops this process has loaded, if any."""
    import torch

    try:
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("autellix::swap_blocks", "CUDA")
    except RuntimeError:  # "operator autellix::swap_blocks does not exist"
        return None
    return "cuda" if has_cuda else "cpu"


def requested_variant() -> Variant | Literal["reference"]:
    """The build :func:`load_ops` picks: ``$AUTELLIX_OPS_BACKEND`` (``auto``, ``cuda``, ``cpu``,
    ``reference``), ``auto`` meaning CUDA when torch sees a GPU, else CPU."""
    import torch

    wanted = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "cuda", "cpu", "reference"):
        raise OpsBuildError(f"{BACKEND_ENV}={wanted!r}: expected auto, cuda, cpu or reference")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted  # type: ignore[return-value]


def load_ops() -> Backend:
    """Load (building on first use) the ops once per process; the backend in use.

    Never raises for a failed build: it logs one warning and returns ``"reference"``."""
    global _backend
    with _lock:
        if _backend is None:
            _backend = _load()
        return _backend


def _load() -> Backend:
    already = _registered()
    if already is not None:
        return already
    try:
        variant = requested_variant()
        if variant == "reference":
            return "reference"
        build_ops(variant)
        return variant
    except OpsBuildError as exc:
        log.warning("autellix.kvswap: using the pure-torch reference copy (slower): %s", exc)
        return "reference"
