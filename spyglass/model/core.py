"""``Model``: a loaded TransformerLens model with the operations Spyglass needs (tokens,
forward passes and their hooks, attribution, gradients, weights, generation)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformer_lens import HookedTransformer, TransformerLensKeyValueCache

from spyglass.model.hooks import hook_layer, mlp_hook
from spyglass.model.steering import Steer, steer_hooks


class ModelLoadError(Exception):
    """A model spec that cannot be loaded; ``str(e)`` is one line for the CLI."""


@dataclass(frozen=True)
class Attribution:
    """Direct logit attribution at one position (see :meth:`Model.attribute`)."""

    target: int
    """The token explained (the top prediction when none was asked for)."""
    logit: float
    """The model's logit for the target (minus the other token's)."""
    bias: float
    """What no component explains: b_U (and the final norm's bias), target minus other."""
    scale: float
    """The final norm's scale at the position, frozen from the forward pass."""
    embed: float
    pos_embed: float
    heads: torch.Tensor
    """[layers, heads] each head's output."""
    attn_bias: list[float]
    mlp: list[float]
    """Each MLP layer's output (its neurons plus its bias)."""
    neurons: list[torch.Tensor]
    """Per layer [d_mlp]: activation x W_out row."""
    mlp_bias: list[float]
    hook_acts: dict[str, torch.Tensor]
    """The requested hooks' activations [pos, d] (for SAE latents)."""
    through: Callable[[torch.Tensor], torch.Tensor]
    """Vectors [..., d_model] -> their direct contribution through the frozen final norm."""

    @property
    def parts_sum(self) -> float:
        """Every component: equals ``logit - bias`` up to float rounding."""
        return (
            self.embed
            + self.pos_embed
            + float(self.heads.sum())
            + sum(self.attn_bias)
            + sum(self.mlp)
        )


class Model:
    """A loaded TransformerLens model with the operations Spyglass needs."""

    def __init__(self, spec: str, hooked: HookedTransformer) -> None:
        self.spec = spec
        self._tl = hooked
        self._tl.eval()
        _store_transposed(hooked)
        cfg = hooked.cfg
        self.n_layers: int = cfg.n_layers
        self.d_model: int = cfg.d_model
        self.d_mlp: int = cfg.d_mlp
        self.d_vocab: int = cfg.d_vocab
        self.n_ctx: int = cfg.n_ctx
        self.device = torch.device(cfg.device or "cpu")
        tok = hooked.tokenizer
        if tok is None:
            raise ModelLoadError(f"model {spec!r} has no tokenizer")
        self._tokenizer = tok
        # BOS is decided here, once: prepend it exactly when the model was set up to.
        self.bos_id: int | None = tok.bos_token_id if cfg.default_prepend_bos else None
        self.eos_id: int | None = tok.eos_token_id
        self._unembed_hash: str | None = None
        self.centred_writes: bool = _centred(hooked)
        """Whether the writing weights are centred (TransformerLens centres LayerNorm
        models only): hook_mlp_out and the residual stream have zero mean over d_model."""
        self.norms_before_folding: Callable[[], dict[str, torch.Tensor]] | None = None
        """Set by the loader: the norms' weights as they were before folding."""

    # ---- tokens ---------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` with no BOS (corpus documents are chunked from these)."""
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids for a live prompt: BOS first when this model uses one."""
        ids = self.tokenize(text)
        return [self.bos_id, *ids] if self.bos_id is not None else ids

    @property
    def pad_id(self) -> int:
        """The id right padding is made of: EOS, else BOS, else 0. Any id would do: a
        causal model's real positions never see later ones, and the indexer leaves padded
        positions out of every statistic."""
        for i in (self.eos_id, self.bos_id):
            if i is not None:
                return i
        return 0

    def pad_batch(
        self, sequences: Sequence[Sequence[int]], width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token lists of at most ``width`` ids as one batch: [B, width] ids, each row
        padded on the right with ``pad_id``, and [B] their real lengths."""
        lengths = [len(ids) for ids in sequences]
        if any(n > width for n in lengths):
            raise ValueError(f"a sequence of {max(lengths)} tokens does not fit in {width}")
        rows = [[*ids, *[self.pad_id] * (width - len(ids))] for ids in sequences]
        return torch.tensor(rows, dtype=torch.long), torch.tensor(lengths, dtype=torch.long)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """One display string per id (partial UTF-8 pieces show as U+FFFD)."""
        return [self._tokenizer.decode([i]) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids))

    # ---- forward passes -------------------------------------------------------

    def has_hook(self, name: str) -> bool:
        return name in self._tl.hook_dict

    @property
    def weight_bytes(self) -> int:
        """Bytes of the model's parameters (resident once a forward has touched them)."""
        return sum(p.numel() * p.element_size() for p in self._tl.parameters())

    def hook_width(self, name: str) -> int:
        """Size of the last dimension at a hook point, read off a two-token forward."""
        probe = torch.tensor([[self.bos_id or 0] * 2])
        return self.activations(probe, [name])[name].shape[-1]

    @torch.inference_mode()
    def activations(
        self,
        tokens: torch.Tensor,
        hooks: Sequence[str],
        visit: Callable[[str, torch.Tensor], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run ``tokens`` [batch, pos] and return each named hook's activation; with
        ``visit``, hand each one to ``visit(hook, act)`` as the forward reaches it instead
        (and return nothing), so no more than one is held at a time.

        The forward stops after the last block a hook belongs to, so nothing past it
        (in particular no unembedding) is paid for.
        """
        out: dict[str, torch.Tensor] = {}

        def keep(act: torch.Tensor, hook) -> None:
            if visit is None:
                out[hook.name] = act
            else:
                visit(hook.name, act)

        self._tl.run_with_hooks(
            tokens.to(self.device),
            fwd_hooks=[(name, keep) for name in hooks],
            stop_at_layer=max(hook_layer(name) for name in hooks) + 1,
            return_type=None,
        )
        return out

    @torch.inference_mode()
    def next_token_log_probs(
        self,
        tokens: torch.Tensor,
        hook: str | None = None,
        edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Log-probabilities of the next token at each position, [batch, pos, V] float32;
        with ``hook`` and ``edit`` the activation there is replaced by ``edit(activation)``
        on the way."""
        hooks = [(hook, lambda act, hook: edit(act))] if hook and edit else []
        logits = self._tl.run_with_hooks(tokens.to(self.device), fwd_hooks=hooks)
        return logits.float().log_softmax(-1)

    @torch.inference_mode()
    def edited_log_probs(
        self,
        tokens: torch.Tensor,
        edits: Sequence[tuple[str, Callable]],
        start: tuple[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Next-token log-probabilities [batch, pos, V] with TransformerLens hooks ``edits``
        ((name, fn(act, hook) -> act or None)) on the way; ``start`` = (layer, resid_pre
        [batch, pos, d_model]) runs only the blocks from ``layer`` on, from that residual."""
        if start is None:
            logits = self._tl.run_with_hooks(tokens.to(self.device), fwd_hooks=list(edits))
        else:
            layer, resid = start
            logits = self._tl.run_with_hooks(
                resid.to(self.device),
                fwd_hooks=list(edits),
                start_at_layer=layer,
                tokens=tokens.to(self.device),
            )
        return logits.float().log_softmax(-1)

    @torch.inference_mode()
    def log_probs(self, ids: Sequence[int], steer: Sequence[Steer] = ()) -> torch.Tensor:
        """Log-probabilities of the next token at each position of one sequence, [T, V],
        with ``steer`` edits applied at every position."""
        return self.log_probs_batch([ids], steer)[0]

    @torch.inference_mode()
    def attribute(
        self, ids: Sequence[int], position: int, target: int | None, other: int | None, hooks=()
    ) -> Attribution:
        """Direct contributions to logit[target] (minus logit[other]) at ``position``: every
        term that sums to the final residual stream there, each through the final norm with
        its scale frozen from this forward pass, dotted with the unembedding direction.
        ``target`` None means the top prediction of this same pass."""
        logits, cache = self._tl.run_with_cache(torch.tensor([list(ids)], device=self.device))
        tl, cfg = self._tl, self._tl.cfg
        if target is None:
            target = int(logits[0, position].argmax())
        direction = tl.W_U[:, target].clone()
        bias = float(tl.b_U[target])
        logit = float(logits[0, position, target])
        if other is not None:
            direction -= tl.W_U[:, other]
            bias -= float(tl.b_U[other])
            logit -= float(logits[0, position, other])
        ln = tl.ln_final
        if getattr(ln, "b", None) is not None:
            bias += float(ln.b @ direction)
        if getattr(ln, "w", None) is not None:
            direction = direction * ln.w
        centred = cfg.normalization_type in ("LN", "LNPre")
        scale = float(cache["ln_final.hook_scale"][0, position])

        def through(x: torch.Tensor) -> torch.Tensor:  # [..., d_model] -> [...]
            x = x.float()
            if centred:
                x = x - x.mean(-1, keepdim=True)
            return x @ direction.float() / scale

        at = (0, position)
        heads, attn_bias, mlp, neurons, mlp_bias = [], [], [], [], []
        for layer in range(cfg.n_layers):
            z = cache[f"blocks.{layer}.attn.hook_z"][at]  # [heads, d_head]
            block = tl.blocks[layer]  # (tl.W_O and the like stack every layer's, per access)
            out = torch.einsum("hd,hdm->hm", z, block.attn.W_O)
            heads.append(through(out))
            attn_bias.append(float(through(block.attn.b_O)))
            mlp.append(float(through(cache[f"blocks.{layer}.hook_mlp_out"][at])))
            post = cache[f"blocks.{layer}.mlp.hook_post"][at].float()
            neurons.append(post * through(block.mlp.W_out))
            mlp_bias.append(float(through(block.mlp.b_out)))
        pos_embed = (
            float(through(cache["hook_pos_embed"][at])) if "hook_pos_embed" in cache else 0.0
        )
        return Attribution(
            target=target,
            logit=logit,
            bias=bias,
            scale=scale,
            embed=float(through(cache["hook_embed"][at])),
            pos_embed=pos_embed,
            heads=torch.stack(heads).cpu(),
            attn_bias=attn_bias,
            mlp=mlp,
            neurons=[n.cpu() for n in neurons],
            mlp_bias=mlp_bias,
            hook_acts={h: cache[h][0] for h in hooks},
            through=through,
        )

    @property
    def n_heads(self) -> int:
        return self._tl.cfg.n_heads

    def with_grads(
        self,
        ids: Sequence[int],
        hooks: Sequence[str],
        metric: Callable[[torch.Tensor], torch.Tensor],
        *,
        backward: bool = True,
    ) -> tuple[float, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One forward and backward pass of one sequence: ``metric(logits [T, V])`` (a
        scalar), and each hook's activation and its gradient, [T, ...] each. The weights
        get no gradient. Without ``backward``: the same forward pass (autograd on, not
        inference mode, so that equal inputs give bitwise-equal activations with or
        without it: kernels may be chosen by whether a tensor needs a gradient) and no
        gradients."""
        acts: dict[str, torch.Tensor] = {}
        tokens = torch.tensor([list(ids)], device=self.device)

        def keep(act: torch.Tensor, hook) -> None:
            act.retain_grad()
            acts[hook.name] = act

        with torch.enable_grad():
            params = [p for p in self._tl.parameters() if p.requires_grad]
            for p in params:
                p.requires_grad_(False)
            try:
                # The embedding's output needs a gradient for anything after it to have one.
                start = [("hook_embed", lambda act, hook: act.requires_grad_(True))]
                logits = self._tl.run_with_hooks(
                    tokens, fwd_hooks=start + [(h, keep) for h in hooks]
                )
                value = metric(logits[0].float())
                if backward:
                    value.backward()
            finally:
                for p in params:
                    p.requires_grad_(True)
        return (
            float(value.detach()),
            {h: a[0].detach() for h, a in acts.items()},
            {h: a.grad[0] for h, a in acts.items()} if backward else {},
        )

    @torch.inference_mode()
    def metric_batch(
        self,
        ids: Sequence[int],
        edits: Sequence[dict[str, Callable[[torch.Tensor], torch.Tensor]]],
        metric: Callable[[torch.Tensor], torch.Tensor],
    ) -> list[float]:
        """``metric(logits [T, V])`` of one sequence run once per entry of ``edits`` (one
        batch): entry b maps hook names to an edit of that run's activation [T, ...]."""
        if not edits:
            return []
        tokens = torch.tensor([list(ids)] * len(edits), device=self.device)
        names = sorted({h for e in edits for h in e})

        def edit(act: torch.Tensor, hook) -> torch.Tensor:
            for b, e in enumerate(edits):
                if hook.name in e:
                    act[b] = e[hook.name](act[b])
            return act

        logits = self._tl.run_with_hooks(tokens, fwd_hooks=[(h, edit) for h in names])
        return [float(metric(logits[b].float())) for b in range(len(edits))]

    def mlp_activations(
        self, tokens: torch.Tensor, layers: Sequence[int]
    ) -> dict[int, torch.Tensor]:
        """``{layer: mlp.hook_post [batch, pos, d_mlp]}`` for ``tokens`` [batch, pos]."""
        acts = self.activations(tokens, [mlp_hook(layer) for layer in layers])
        return {layer: acts[mlp_hook(layer)] for layer in layers}

    # ---- weights --------------------------------------------------------------

    def unfolded_norm(
        self, layer: int, name: str = "ln2"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Block ``layer``'s norm ``name`` weight and bias (None for RMSNorm) as the
        unprocessed model has them, though folding moved them into the next weights."""
        module = getattr(self._tl.blocks[layer], name)
        if hasattr(module, "w"):  # not folded: the norm still holds them
            return module.w.detach(), getattr(module, "b", None)
        if self.norms_before_folding is None:
            raise ModelLoadError(
                f"model {self.spec!r} no longer has its {name} weights (folded at load); "
                "reading a hook after them (mlp.hook_in) needs a model Spyglass can reload"
            )
        state = self.norms_before_folding()
        bias = state.get(f"blocks.{layer}.{name}.b")
        return state[f"blocks.{layer}.{name}.w"].to(self.device), (
            bias.to(self.device) if bias is not None else None
        )

    def neuron_directions(self, layer: int) -> torch.Tensor:
        """``W_out[layer]``: what each neuron writes to the residual stream [d_mlp, d_model]
        (the block's own weight: ``HookedTransformer.W_out`` stacks every layer's)."""
        return self._tl.blocks[layer].mlp.W_out

    def unembed_fingerprint(self) -> str:
        """A hash of the unembedding ``W_U`` (its dtype, shape and values), worked out once:
        what ``logit_effects`` depends on besides the directions."""
        if self._unembed_hash is None:
            w = self._tl.W_U.detach().to("cpu").contiguous()
            h = hashlib.blake2b(digest_size=20)
            h.update(f"{w.dtype} {tuple(w.shape)} ".encode())
            h.update(w.view(torch.uint8).numpy().tobytes())
            self._unembed_hash = h.hexdigest()
        return self._unembed_hash

    @torch.inference_mode()
    def logit_effects(
        self, directions: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``directions @ W_U``: direct effect on the logits [n, d_vocab] of [n, d_model],
        into ``out`` when given (a buffer reused across calls: a fresh one of 200 MB is
        page-faulted in each time, a quarter of the product's time on a CPU)."""
        directions = directions.to(self.device, self._tl.W_U.dtype)
        if out is None:
            return directions @ self._tl.W_U
        return torch.mm(directions, self._tl.W_U, out=out[: directions.shape[0]])

    # ---- generation -----------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        prompt: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float,
        seed: int,
        steer: Sequence[Steer] = (),
        deadline: float | None = None,
    ) -> list[int]:
        """Continue ``prompt`` token by token with a KV cache; returns the new ids only.

        ``temperature == 0`` is greedy. Sampling draws from a private generator
        seeded with ``seed``, so two calls with the same seed see the same noise
        and differ only through ``steer``. The cache stays correct under steering: the
        prompt's keys and values are computed once, with the prompt's edits, and each
        new position is computed with its own (none for ``prompt_only`` edits).
        Past ``deadline`` (a ``time.monotonic()`` value) it raises TimeoutError.
        """
        return self.generate_batch(
            [prompt], max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
            steer=steer, deadline=deadline,
        )[0]  # fmt: skip

    @torch.inference_mode()
    def generate_batch(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        seed: int,
        steer: Sequence[Steer] = (),
        deadline: float | None = None,
    ) -> list[list[int]]:
        """``generate`` for prompts of one length at once, a row each: each row draws from
        its own generator seeded with ``seed``, as ``generate`` does, and stops at EOS."""
        if len({len(p) for p in prompts}) > 1:
            raise ValueError("generate_batch needs prompts of one length")
        gens = [torch.Generator(device=self.device).manual_seed(seed) for _ in prompts]
        on_prompt = [True]

        def edit(act: torch.Tensor, s: Steer) -> torch.Tensor:
            return act if s.prompt_only and not on_prompt[0] else s.apply(act)

        hooks = steer_hooks(steer, edit)
        cache = TransformerLensKeyValueCache.init_cache(self._tl.cfg, self.device, len(prompts))
        new: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        inputs = torch.tensor([list(p) for p in prompts], device=self.device)
        with self._tl.hooks(fwd_hooks=hooks):
            for _ in range(max_new_tokens):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError("generation ran past its deadline")
                logits = self._tl(inputs, past_kv_cache=cache)[:, -1].float()
                on_prompt[0] = False
                picked = []
                for row, gen in enumerate(gens):
                    next_id = _pick(logits[row], temperature, gen)
                    picked.append(next_id)
                    if not done[row]:
                        new[row].append(next_id)
                        done[row] = next_id == self.eos_id
                if all(done):
                    break
                inputs = torch.tensor([[i] for i in picked], device=self.device)
        return new

    @torch.inference_mode()
    def log_probs_batch(
        self, texts: Sequence[Sequence[int]], steer: Sequence[Steer] = ()
    ) -> torch.Tensor:
        """``log_probs`` of sequences of one length at once: [B, T, V]."""
        hooks = steer_hooks(steer, lambda act, s: s.apply(act))
        tokens = torch.tensor([list(t) for t in texts], device=self.device)
        return self._tl.run_with_hooks(tokens, fwd_hooks=hooks).float().log_softmax(-1)


def _store_transposed(hooked: HookedTransformer) -> None:
    """Lay out the weights TransformerLens multiplies as ``W.T.contiguous()`` column-major.

    Its gated MLP and unembedding call ``.T.contiguous()`` on every forward, which copies
    the weight each time: for one generated token that copy (113 MB for SmolLM2's W_U)
    costs more than the arithmetic. With the transpose already contiguous the call is
    free; the values are unchanged.
    """
    names = ("W_in", "W_gate", "W_out")
    params = [getattr(b.mlp, n) for b in hooked.blocks for n in names if hasattr(b.mlp, n)]
    for param in [*params, hooked.unembed.W_U]:
        if param.dim() == 2 and param.is_contiguous():
            param.data = param.data.t().contiguous().t()


def _pick(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


def _centred(hooked: HookedTransformer) -> bool:
    """Whether the model's writing weights were centred (mean zero over d_model), which
    TransformerLens does to LayerNorm models when it processes them: read off the first
    MLP's output weights, since a folder does not say how its weights were processed."""
    if hooked.cfg.normalization_type not in ("LN", "LNPre") or hooked.cfg.attn_only:
        return False
    w = hooked.blocks[0].mlp.W_out.detach().float()
    return bool(w.mean(-1).abs().max() <= 1e-5 * w.pow(2).mean().sqrt())
