"""A static, CUDA-graph-capturable batch-1 decoding step for LLaMA and Qwen2 models (speed measurements).

Hugging Face's ``generate`` spends far more time in Python per token than a
7B model spends reading its weights on a GPU, which would hide any kernel
speedup. :class:`StaticDecoder` runs one decoding step with no host
synchronisation and fixed shapes: a preallocated KV cache of ``max_len``
positions, the position as a device tensor, attention over the whole cache
with a mask. It reuses the model's own modules (embeddings, RMSNorms, the
seven projections, the MLP, the LM head), so inside
``kernels.decode.sparse_decoding`` it runs the sparse projections, and its
logits equal the Hugging Face model's (tested on CPU). :class:`GraphedDecoder`
captures one step, greedy next-token choice included, in a CUDA graph;
replaying it decodes one token with no Python in the loop.

Cost note: every step attends over all ``max_len`` cache slots (masked), a
fixed cost the same for dense and sparse runs; keep ``max_len`` small.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import DeviceError, UnsupportedArchitectureError
from ...core.models import decoder_layers


DECODABLE_TYPES = ("llama", "qwen2")
"""Model types whose decoder layer is LLaMA's step (pre-norm attention with RoPE, then the gated MLP): Qwen2 adds
q/k/v biases, which its projections (or their sparse replacements) apply themselves."""


class StaticDecoder:
    """One-token decoding steps of a LLaMA or Qwen2 ``*ForCausalLM`` with a static KV cache.

    Args:
        model: a Hugging Face causal LM whose ``config.model_type`` is in :data:`DECODABLE_TYPES` (Qwen2 without
            sliding-window attention), possibly inside ``sparse_decoding`` / ``cpu_sparse_decoding``.
        max_len: KV cache positions (the longest sequence it can decode).
    """

    def __init__(self, model: nn.Module, max_len: int = 256):
        config = model.config
        kind = getattr(config, "model_type", type(model).__name__)
        if kind not in DECODABLE_TYPES:
            raise UnsupportedArchitectureError(
                f"StaticDecoder supports {', '.join(DECODABLE_TYPES)} models, not {kind!r}. Fix: measure with one of "
                "those (a LLaMA-shaped random model: models.random_model('llama2-7b')).")
        if getattr(config, "use_sliding_window", False):
            raise UnsupportedArchitectureError(
                "StaticDecoder attends over the whole cache; this model uses sliding-window attention. Fix: load it "
                "with use_sliding_window=False, or decode fewer tokens than its window with the model's own forward.")
        self.model = model
        self.layers = decoder_layers(model)
        inner = model.model
        self.embed, self.norm, self.lm_head = inner.embed_tokens, inner.norm, model.lm_head
        self.inv_freq = inner.rotary_emb.inv_freq.float()
        self.rope_scale = float(inner.rotary_emb.attention_scaling)
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.scaling = attn.scaling
        self.max_len = int(max_len)
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        shape = (len(self.layers), self.n_kv, self.max_len, self.head_dim)
        self.k_cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v_cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.slots = torch.arange(self.max_len, device=self.device)

    def reset(self) -> None:
        """Forget the cached keys and values."""
        self.k_cache.zero_()
        self.v_cache.zero_()

    def _rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = pos.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.rope_scale).to(self.dtype), (emb.sin() * self.rope_scale).to(self.dtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _attention(self, index: int, layer: nn.Module, x: torch.Tensor, pos, cos, sin) -> torch.Tensor:
        attn = layer.self_attn
        q = attn.q_proj(x).view(self.n_heads, self.head_dim)
        k = attn.k_proj(x).view(self.n_kv, self.head_dim)
        v = attn.v_proj(x).view(self.n_kv, self.head_dim)
        q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
        self.k_cache[index].index_copy_(1, pos, k[:, None, :])
        self.v_cache[index].index_copy_(1, pos, v[:, None, :])
        mask = (self.slots <= pos)[None, None, None, :]
        out = F.scaled_dot_product_attention(q[None, :, None, :], self.k_cache[index][None],
                                             self.v_cache[index][None], attn_mask=mask, scale=self.scaling,
                                             enable_gqa=self.n_kv != self.n_heads)
        return attn.o_proj(out.reshape(1, self.n_heads * self.head_dim))

    def step(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits ``[1, vocab]`` for ``token`` (LongTensor ``[1]``) at position ``pos`` (LongTensor ``[1]``)."""
        cos, sin = self._rope(pos)
        h = self.embed(token)
        for index, layer in enumerate(self.layers):
            h = h + self._attention(index, layer, layer.input_layernorm(h), pos, cos, sin)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.lm_head(self.norm(h))

    def greedy_step(self, token: torch.Tensor, pos: torch.Tensor) -> None:
        """One step that feeds itself: ``token`` becomes the argmax next token and ``pos`` advances (in place)."""
        logits = self.step(token, pos)
        token.copy_(logits.argmax(dim=-1))
        pos.add_(1)

    @torch.no_grad()
    def decode(self, first_token: int, n_tokens: int) -> list[int]:
        """Greedy decoding of ``n_tokens`` tokens from position 0 (eager; returns the generated ids)."""
        if n_tokens > self.max_len:
            raise ValueError(f"n_tokens={n_tokens} exceeds the cache (max_len={self.max_len}).")
        token = torch.tensor([first_token], device=self.device)
        pos = torch.zeros(1, dtype=torch.long, device=self.device)
        out = []
        for _ in range(n_tokens):
            self.greedy_step(token, pos)
            out.append(int(token))
        return out


class GraphedDecoder:
    """:meth:`StaticDecoder.greedy_step` captured in a CUDA graph: :meth:`replay` decodes one token.

    Warm-up steps run first (they compile Triton kernels and settle cuBLAS) on
    a side stream; then one step is captured. :meth:`restart` rewinds to
    position 0 so a timing run can decode up to ``max_len`` tokens again.
    """

    def __init__(self, decoder: StaticDecoder, first_token: int = 1, warmup: int = 3):
        if decoder.device.type != "cuda":
            raise DeviceError("CUDA graphs need a model on a CUDA device. Fix: move the model to the GPU "
                              "(model.cuda()), or time the eager StaticDecoder on CPU.")
        self.decoder = decoder
        self.first_token = int(first_token)
        self.token = torch.full((1,), self.first_token, dtype=torch.long, device=decoder.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=decoder.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(warmup):
                decoder.greedy_step(self.token, self.pos)
        torch.cuda.current_stream().wait_stream(stream)
        self.restart()
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            decoder.greedy_step(self.token, self.pos)
        self.restart()

    def restart(self) -> None:
        """Back to position 0 with the first token and an empty cache."""
        self.token.fill_(self.first_token)
        self.pos.zero_()
        self.decoder.reset()

    def replay(self) -> None:
        """Decode one token (asynchronous: synchronise before reading the clock)."""
        self.graph.replay()
