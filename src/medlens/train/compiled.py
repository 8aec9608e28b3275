"""``train.compile``: the training forward through ``torch.compile``.

Only the forward used for training is compiled; checkpoints and evaluation use the plain
module, so saved weights keep their plain keys (no ``_orig_mod.`` prefix). Under DDP the
wrapped module is compiled, as PyTorch recommends (DDPOptimizer then splits the graph at the
gradient buckets).

``torch.compile`` is lazy: a missing C++ compiler or an unsupported operation shows up at the
first call. That call is checked: when the compiled forward fails but the plain one works, the
compiler is to blame and the user gets a :class:`ConfigError` instead of a long traceback.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from medlens.errors import ConfigError

Forward = Callable[[torch.Tensor], torch.Tensor]


class CheckedCompile:
    """``torch.compile(module)``, whose first call turns a compiler failure into ConfigError."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.compiled = torch.compile(module)
        self.checked = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.checked:
            return self.compiled(x)
        try:
            out = self.compiled(x)
        except Exception as exc:
            self.module(x)  # fails the same way without the compiler: a real error, raise it
            raise ConfigError(
                f"torch.compile could not compile the model: {type(exc).__name__}: "
                f"{_first_line(exc)}",
                hint="train without it: --set train.compile=false (inductor needs a C++ "
                "compiler on CPUs and Triton on GPUs)",
            ) from exc
        self.checked = True
        return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def training_forward(net: torch.nn.Module, compile_it: bool) -> Forward:
    """The callable the training loop feeds batches to: ``net`` itself or its compiled form."""
    return CheckedCompile(net) if compile_it else net
