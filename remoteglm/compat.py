"""The one place for CPU / distributed quirks (sat, DeepSpeed, torch on a machine without CUDA).

Nothing here changes behaviour on a CUDA machine except filling in environment defaults.
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """Environment defaults so sat/DeepSpeed treat a plain `python` run as rank 0 of 1.

    sat builds a process group whenever a model is created; without these it may look for MPI
    or bind a hostname. Only loopback is ever used.
    """
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    # sat and DeepSpeed print a lot at import; keep the user's terminal readable.
    os.environ.setdefault("SAT_LOGLEVEL", "WARNING")
    quiet_warnings()
    if os.environ.get("WORLD_SIZE") == "1":
        local_process_group()


def local_process_group() -> None:
    """A one-process group with an in-memory store, started before sat starts its own.

    sat's init (and DeepSpeed's) would create a torch TCPStore, which listens unauthenticated
    on ALL interfaces (``*:MASTER_PORT``) whatever MASTER_ADDR says: anyone on the network
    could set keys in a chat or API process. One process needs no store at all; sat and
    DeepSpeed keep a group that already exists. Multi-rank launches (WORLD_SIZE > 1) are left to
    the launcher's rendezvous.
    """
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        return
    lo = _loopback_ifname()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
    os.environ.setdefault("NCCL_SOCKET_IFNAME", lo)
    import torch

    # CUDA tensors' collectives (DeepSpeed, sat's loss all-reduce) go to NCCL, as they would in
    # sat's own group; the CPU ones to gloo.
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    try:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    except (RuntimeError, ValueError):
        if backend == "gloo":
            raise
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def _loopback_ifname() -> str:
    # gloo's own pair sockets bind to the named interface: keep them on loopback
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return "lo"
    return "lo" if "lo" in names else next((n for n in names if n.startswith("lo")), "lo")


def quiet_warnings() -> None:
    """Silence warnings that are expected here and tell the user nothing actionable."""
    import warnings

    import torch

    if not torch.cuda.is_available():
        # Without this DeepSpeed warns on every import that it fell back to the CPU.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator.*")
    # sat builds 1-row embeddings for the ViT/Q-Former "vocabularies" it never uses.
    warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
    # peft reads transformers' deprecated alias while it loads an adapter (nothing of ours to change).
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # bitsandbytes on an AVX-512-BF16 CPU looks for an optional hub kernel at import and warns that
    # it is missing; the project pins the reference path anyway (pin_bnb_cpu_layout).
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: "kernels-community" not in record.getMessage())
    quiet_bnb_casts()


def quiet_bnb_casts() -> None:
    """bitsandbytes logs "inputs will be cast" on every int8 matmul with fp32 inputs (the CPU
    case): expected, and noise. Idempotent."""
    import logging

    lg = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(getattr(f, "remoteglm", False) for f in lg.filters):
        f = logging.Filter()
        f.filter = lambda record: "inputs will be cast" not in record.getMessage()
        f.remoteglm = True
        lg.addFilter(f)


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def patch_for_cpu_training() -> None:
    """Let sat's training loop and DeepSpeed run on a machine without CUDA. No-op with CUDA.

    - sat's timers and checkpoint code call torch.cuda.synchronize / get_rng_state /
      set_rng_state unconditionally: make them no-ops (the CPU RNG is saved separately).
    - DeepSpeed's CPU communication backend JIT-compiles a shared-memory op (45-70 s) on the
      first initialize; gloo is enough here, so skip the build.
    """
    import sys

    import torch

    if torch.cuda.is_available():
        return
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.get_rng_state = lambda *a, **k: torch.ByteTensor([0])
    torch.cuda.set_rng_state = lambda *a, **k: None
    import deepspeed.comm.torch  # noqa: F401  (the attribute `deepspeed.comm.torch` is torch itself)

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def pin_bnb_cpu_layout() -> None:
    """Keep bitsandbytes' NF4 weights in their one storage layout on every CPU.

    bitsandbytes 0.50 on a CPU with AVX-512 BF16 repacks an NF4 weight in place on its first
    eval-mode forward (another byte order, nested absmax flattened, ``QuantState.state2``
    dropped). Training after that fails ("a view of a leaf Variable ... in-place operation"), a
    save after it is another format, and results depend on which CPU ran the test. Layers built
    after this call, and those passed to ``unpack_bnb_cpu_layout``, use the reference path that
    every CPU and CUDA share. Idempotent.
    """
    try:
        import bitsandbytes.nn.modules as bnb_modules
    except Exception:  # noqa: BLE001 - no bitsandbytes: nothing to pin (callers report the import)
        return
    bnb_modules.has_avx512bf16 = lambda: False


def unpack_bnb_cpu_layout(model) -> int:
    """Undo bitsandbytes' CPU repacking on every NF4 layer of ``model`` (a layer built before
    ``pin_bnb_cpu_layout`` or by other code) and pin it to the reference path. Returns the
    number of layers that had been repacked."""
    pin_bnb_cpu_layout()
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    except Exception:  # noqa: BLE001
        return 0
    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            qs = getattr(m.weight, "quant_state", None)
            if qs is not None and getattr(qs, "packing_format_for_cpu", False):
                m.weight.data, m.weight.quant_state = _convert_weight_packed_for_cpu_inverse(m.weight.data, qs)
                m.quant_state = m.weight.quant_state
                n += 1
    return n


def distributed_backend() -> str:
    """nccl on GPUs, gloo on CPU."""
    return "gloo" if on_cpu() else "nccl"
