"""The Retriever-Dictionary module (YOLO-RD, section 3.1, equation 7)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_bool, check_float
from .dictionary import as_atoms
from .retriever import FusedRetriever, SplitRetriever, fuse_retriever
from .variants import get_variant, lookup_variant

__all__ = ["RetrieverDictionary"]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"RetrieverDictionary: {name} must be an int >= {minimum}, got {value!r}")
    return value


class RetrieverDictionary(nn.Module):
    """``Z = residual * X + (1 - residual) * PONO(E(G(X))) * WN(D)`` — a shape-preserving block.

    Args:
        in_channels: ``f``, channels of the feature map the module sits on.
        num_atoms: ``N`` (paper default 512). ``None`` takes the count from ``dictionary``.
        kernel_size: ``k`` of the global information exchanger ``E`` (odd, paper default 5).
        residual: ``lambda`` in ``[0, 1]`` (paper default 0.8). For ``variant="authors"`` it
            weights the dictionary term instead of the input, as in the authors' code.
        dictionary: initial atoms: a tensor ``[N, f]`` or any object with an ``.atoms`` tensor
            (e.g. a ``dict_init`` artifact). Random unit vectors when ``None``.
        trainable_dictionary: ``False`` freezes the atoms, so only the retriever learns
            (Table 7).
        variant: ``"paper"`` (default) or ``"authors"``; see :mod:`rd_core.variants`.
        fused_retriever: use the single ``k x k`` convolution ``f -> N`` (Table 4) instead of
            ``E(G(X))``. :meth:`fuse_retriever` converts a trained split module.
        eps: PONO's epsilon.

    In eval mode, whenever no gradient can reach the dictionary (``torch.no_grad()``, or a
    frozen dictionary and PONO), the normalised atoms, PONO's ``gamma``/``beta`` and the mixing
    weight are folded once into a single 1x1 convolution and reused until a parameter changes.

    Example:
        >>> import torch
        >>> rd = RetrieverDictionary(32, num_atoms=64)
        >>> rd(torch.randn(2, 32, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
        >>> rd.atoms.shape
        torch.Size([64, 32])
    """

    # Python-side views TorchScript must not compile
    __jit_unused_properties__ = ("fused", "mix_weights", "atoms", "trainable_dictionary", "config")

    def __init__(
        self,
        in_channels: int,
        num_atoms: int | None = 512,
        kernel_size: int = 5,
        residual: float = 0.8,
        dictionary: Any = None,
        trainable_dictionary: bool = True,
        variant: str = "paper",
        fused_retriever: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        if num_atoms is None:
            if dictionary is None:
                raise ValueError(
                    "RetrieverDictionary: num_atoms=None needs a dictionary to take the count from"
                )
            num_atoms = as_atoms(dictionary, dim=in_channels).shape[0]
        _check_int("num_atoms", num_atoms, 2)
        _check_int("kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"RetrieverDictionary: kernel_size must be odd so the map keeps its size, "
                f"got {kernel_size}"
            )
        if isinstance(residual, bool) or not isinstance(residual, (int, float)):
            raise ValueError(
                f"RetrieverDictionary: residual must be a float in [0, 1], got {residual!r}"
            )
        if not 0.0 <= float(residual) <= 1.0:
            raise ValueError(f"RetrieverDictionary: residual must be in [0, 1], got {residual!r}")
        check_bool("RetrieverDictionary", "trainable_dictionary", trainable_dictionary)
        check_bool("RetrieverDictionary", "fused_retriever", fused_retriever)
        check_float("RetrieverDictionary", "eps", eps)
        spec = lookup_variant("RetrieverDictionary", "variant", variant)
        if dictionary is not None:
            dictionary = as_atoms(dictionary, num_atoms=num_atoms, dim=in_channels)

        self.in_channels = in_channels
        self.num_atoms = num_atoms
        self.kernel_size = kernel_size
        self.residual = float(residual)
        self.variant = variant
        self.eps = float(eps)
        self.retriever = spec.build_retriever(in_channels, num_atoms, kernel_size, fused_retriever)
        self.norm = spec.build_norm(num_atoms, self.eps)
        self.dictionary = spec.build_dictionary(
            num_atoms, in_channels, dictionary, trainable_dictionary
        )
        self._inference_cache: tuple[tuple, torch.Tensor, torch.Tensor | None] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def fused(self) -> bool:
        """True when the retriever is the single ``k x k`` convolution (Table 4)."""
        return isinstance(self.retriever, FusedRetriever)

    @property
    def mix_weights(self) -> tuple[float, float]:
        """``(weight on X, weight on the dictionary term)`` for this variant and residual."""
        return get_variant(self.variant).mix(self.residual)

    @property
    def atoms(self) -> torch.Tensor:
        """The atoms the module uses, ``[N, f]`` (unit length for ``variant="paper"``)."""
        return self.dictionary.atoms

    @property
    def trainable_dictionary(self) -> bool:
        return self.dictionary.trainable

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture (JSON-serialisable).

        Example:
            >>> rd = RetrieverDictionary(8, num_atoms=16)
            >>> RetrieverDictionary(**rd.config).config == rd.config
            True
        """
        return {
            "in_channels": self.in_channels,
            "num_atoms": self.num_atoms,
            "kernel_size": self.kernel_size,
            "residual": self.residual,
            "trainable_dictionary": self.trainable_dictionary,
            "variant": self.variant,
            "fused_retriever": self.fused,
            "eps": self.eps,
        }

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():
            return  # a traced graph keeps no Python checks (and comparing sizes would warn)
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"RetrieverDictionary: input must be a 4-D tensor [B, {self.in_channels}, H, W], "
                f"got {shape}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"RetrieverDictionary: input has {x.shape[1]} channels but in_channels="
                f"{self.in_channels} (input shape {tuple(x.shape)})"
            )

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised per-position atom coefficients ``c'`` ``[B, N, H, W]``.

        Example:
            >>> rd = RetrieverDictionary(8, num_atoms=16)
            >>> rd.coefficients(torch.randn(1, 8, 4, 4)).shape
            torch.Size([1, 16, 4, 4])
        """
        self._check_input(x)
        return self.norm(self.retriever(x))

    def dictionary_term(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_i c'_i * alpha_i`` at every position, ``[B, f, H, W]`` (before mixing)."""
        return self.dictionary(self.coefficients(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            # equation 7 as written: TorchScript keeps no Python-side cache (the fold below
            # saves little next to the retriever's convolutions)
            w_x, w_d = self._script_mix
            return w_x * x + w_d * self.dictionary(self.norm(self.retriever(x)))
        return self._forward_eager(x)

    def __prepare_scriptable__(self) -> RetrieverDictionary:
        # torch.jit.script calls this first: the mixing weights as constants of this variant
        self._script_mix = tuple(float(w) for w in self.mix_weights)
        return self

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        w_x, w_d = self.mix_weights
        if self._can_use_inference_cache():
            # while tracing, the fold is recorded in the graph instead of cached: a cached
            # tensor would be a constant in the second (checking) trace and the graphs differ
            weight, bias = self._folded_dictionary(cache=not torch.jit.is_tracing())
            normalised = self.norm.normalize(self.retriever(x))
            out = F.conv2d(normalised, weight, bias)
            return out.add_(x, alpha=w_x) if w_x != 0.0 else out
        return w_x * x + w_d * self.dictionary(self.norm(self.retriever(x)))

    # ------------------------------------------------------------------ inference cache
    def _folded_parameters(self) -> list[torch.Tensor]:
        tensors = list(self.dictionary.parameters()) + list(self.dictionary.buffers())
        return tensors + list(self.norm.parameters())

    def _can_use_inference_cache(self) -> bool:
        if self.training or self.dictionary.training:
            return False
        if not torch.is_grad_enabled():
            return True
        return not any(p.requires_grad for p in self._folded_parameters())

    def _folded_dictionary(self, cache: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """PONO affine + dictionary + mixing weight as one 1x1 conv; computed once per state
        (every call with ``cache=False``)."""
        if not cache:
            return self._fold()
        tensors = self._folded_parameters()
        key = (
            tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors),
            self.residual,
            self.variant,
            torch.is_inference_mode_enabled(),
        )
        if self._inference_cache is not None and self._inference_cache[0] == key:
            return self._inference_cache[1], self._inference_cache[2]
        weight, bias = self._fold()
        self._inference_cache = (key, weight, bias)
        return weight, bias

    def _fold(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            weight, bias = self.dictionary.linear_map()  # [f, N], [f] | None
            if self.norm.affine:
                shift = weight @ self.norm.bias
                bias = shift if bias is None else bias + shift
                weight = weight * self.norm.weight[None, :]
            w_d = self.mix_weights[1]
            weight = (weight * w_d)[:, :, None, None].contiguous()
            bias = None if bias is None else bias * w_d
        return weight, bias

    def train(self, mode: bool = True) -> RetrieverDictionary:
        self._inference_cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .half() drop the cache
        self._inference_cache = None
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ conversion
    def fuse_retriever(self) -> RetrieverDictionary:
        """Replace the split retriever by its exact fused form (equation 14), in place.

        Example:
            >>> rd = RetrieverDictionary(8, num_atoms=16).eval()
            >>> x = torch.randn(1, 8, 6, 6)
            >>> before = rd(x)
            >>> bool(torch.allclose(before, rd.fuse_retriever()(x), atol=1e-5))
            True
        """
        if self.fused:
            return self
        if not isinstance(self.retriever, SplitRetriever):
            raise TypeError(
                f"fuse_retriever: unsupported retriever {type(self.retriever).__name__}"
            )
        fused = fuse_retriever(self.retriever)
        fused.train(self.retriever.training)
        self.retriever = fused
        return self

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_atoms={self.num_atoms}, "
            f"kernel_size={self.kernel_size}, residual={self.residual}, variant={self.variant!r}, "
            f"fused={self.fused}"
        )
