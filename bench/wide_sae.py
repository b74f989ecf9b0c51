"""Write a random TopK SAE of any width for the embedded model, to index as a user would.

    python bench/wide_sae.py OUT [--width 65536] [--k 32] [--hook blocks.12.hook_resid_post]

Random encoder and decoder rows (seeded), zero biases: every latent fires on the tokens
where its direction is among the k most aligned, so latents fire like a trained TopK SAE's
in number, not in meaning. The memory and speed benchmarks of wide SAEs use these.
"""

from __future__ import annotations

import argparse

import torch

from spyglass.sae import Sae, SaeConfig, save_sae


def random_topk_sae(width: int, k: int, hook: str, d_in: int = 576, seed: int = 0) -> Sae:
    gen = torch.Generator().manual_seed(seed)
    w_dec = torch.nn.functional.normalize(torch.randn(width, d_in, generator=gen), dim=1)
    cfg = SaeConfig(
        architecture="topk", d_in=d_in, d_sae=width, hook_name=hook, model_name="embedded", k=k
    )
    tensors = {
        "W_enc": w_dec.t().contiguous(),
        "W_dec": w_dec,
        "b_enc": torch.zeros(width),
        "b_dec": torch.zeros(d_in),
    }
    return Sae(cfg, tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=65536)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--hook", default="blocks.12.hook_resid_post")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    save_sae(random_topk_sae(args.width, args.k, args.hook, seed=args.seed), args.out)
    print(f"wrote a random {args.width:,}-latent TopK SAE (k={args.k}) to {args.out}")


if __name__ == "__main__":
    main()
