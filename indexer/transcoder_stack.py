"""The trainable transcoders of every layer, stacked on a leading layer dimension: encode,
sparse decode, skip, JumpReLU's straight-through threshold, and the per-layer loss
(``indexer.transcoder_training`` trains them)."""

from __future__ import annotations

import math

import torch

JUMP_BANDWIDTH = 0.05
"""Width of the rectangle the threshold's pseudo-derivative uses (on scaled inputs)."""


class _Jump(torch.autograd.Function):
    """Heaviside(pre - threshold), with a pseudo-derivative for the threshold only."""

    @staticmethod
    def forward(ctx, pre, threshold):
        ctx.save_for_backward(pre, threshold)
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        near = ((pre - threshold).abs() < JUMP_BANDWIDTH / 2).to(pre.dtype)
        # [n, b, d_sae]; autograd sums it over the batch to the threshold's [n, 1, d_sae].
        return None, -(grad * near / JUMP_BANDWIDTH)


class TranscoderStack(torch.nn.Module):
    """Every layer's trainable transcoder, stacked on a leading layer dimension, on scaled
    inputs and outputs."""

    def __init__(self, n: int, d_in: int, d_out: int, cfg, gen):
        super().__init__()
        w_dec = torch.randn(n, cfg.d_sae, d_out, generator=gen)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        w_enc = torch.randn(n, d_in, cfg.d_sae, generator=gen)
        w_enc /= w_enc.norm(dim=1, keepdim=True)
        self.W_enc = torch.nn.Parameter(w_enc)  # [n, d_in, d_sae]
        self.b_enc = torch.nn.Parameter(torch.zeros(n, cfg.d_sae))
        self.W_dec = torch.nn.Parameter(w_dec)  # [n, d_sae, d_out]
        self.b_dec = torch.nn.Parameter(torch.zeros(n, d_out))
        self.W_skip = torch.nn.Parameter(torch.zeros(n, d_out, d_in)) if cfg.skip else None
        self.log_threshold = (
            torch.nn.Parameter(torch.full((n, cfg.d_sae), math.log(0.1)))
            if cfg.activation == "jumprelu"
            else None
        )
        self.k = cfg.k

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:  # [n, b, d_in] -> [n, b, d_sae]
        return torch.baddbmm(self.b_enc.unsqueeze(1), x, self.W_enc)

    def decode_sparse(self, indices, values) -> torch.Tensor:
        """sum_j values[l, :, j] * W_dec[l, indices[l, :, j]]: [n, b, k] -> [n, b, d_out]."""
        n, b, k = indices.shape
        d_sae = self.W_dec.shape[1]
        offset = (torch.arange(n, device=indices.device) * d_sae).view(n, 1, 1)
        flat = torch.nn.functional.embedding_bag(
            (indices + offset).reshape(n * b, k),
            self.W_dec.reshape(n * d_sae, -1),
            per_sample_weights=values.reshape(n * b, k),
            mode="sum",
        )
        return flat.view(n, b, -1)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """b_dec plus the skip connection's x @ W_skip^T: [n, b, d_in] -> [n, b, d_out]."""
        out = self.b_dec.unsqueeze(1)
        if self.W_skip is not None:
            out = out + torch.bmm(x, self.W_skip.transpose(1, 2))
        return out

    def jump(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """JumpReLU latents [n, b, d_sae] and the (pseudo-differentiable) firing mask."""
        threshold = self.log_threshold.exp().unsqueeze(1)
        fires = _Jump.apply(pre, threshold)
        return pre * (pre > threshold).to(pre.dtype), fires

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def fvu_per_layer(y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """[n] fraction of variance unexplained per layer, over a batch [n, b, d]."""
    err = (y - y_hat).pow(2).sum(dim=(1, 2))
    var = (y - y.mean(1, keepdim=True)).pow(2).sum(dim=(1, 2))
    return err / var.clamp(min=1e-12)


def least_squares(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Per layer, W [d_out, d_in] minimising |y - x W^T|^2 + ridge * rows * |W|^2
    (normal equations in float64, one layer at a time)."""
    out = []
    for xl, yl in zip(x.double(), y.double(), strict=True):
        gram = xl.T @ xl + torch.eye(xl.shape[1], dtype=xl.dtype, device=xl.device) * (
            ridge * xl.shape[0]
        )
        out.append(torch.linalg.solve(gram, xl.T @ yl).T.to(x.dtype))
    return torch.stack(out)
