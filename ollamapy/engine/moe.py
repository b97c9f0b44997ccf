"""A mixture-of-experts feed-forward (Mixtral, qwen3moe): a router picks a few gated MLPs per
token and mixes their outputs.

    probs   = softmax(router(x))                  over all n_experts
    w, e    = top_k(probs, n_experts_used)        renormalised to sum to 1 (norm_top_k)
    y       = sum_j w_j * down_e_j(glu(gate_e_j(x), up_e_j(x)))

(gpt-oss's softmax over the top-k router logits is the renormalised case.) Each projection's
weights for all experts are one `Experts` module, (n_experts, out, in), with a bias per
expert where the family has them (gpt-oss); `weights(index)` returns the float weights of the
chosen experts, so a quantized twin that keeps its codes and dequantizes only what is asked
for drops in from outside (the fast path).
Two ways to run the same sum: a few tokens (a decode step, or inside a compiled graph, where
shapes must not depend on the routing) gather each token's experts; many tokens (a prompt) go
expert by expert, each expert's weights read once for all the tokens routed to it.
"""

from __future__ import annotations

import torch
from torch import nn

from ollamapy.engine.config import ModelConfig
from ollamapy.engine.ops import Linear, glu


class Experts(nn.Module):
    """The weights of one projection for every expert: (n_experts, out_features, in_features),
    and its biases (n_experts, out_features) if it has them."""

    def __init__(self, n_experts: int, in_features: int, out_features: int,
                 bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, out_features, in_features),
                                   requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(n_experts, out_features), requires_grad=False) \
            if bias else None

    def weights(self, index: torch.Tensor) -> torch.Tensor:
        """index (...) expert ids → (..., out_features, in_features) float weights."""
        return self.weight[index]


class MoEFeedForward(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.n_experts, self.top_k, self.norm_top_k = c.n_experts, c.n_experts_used, c.norm_top_k
        self.activation = c.activation
        self.router = Linear(c.dim, c.n_experts, bias=c.moe_bias)
        self.w_gate = Experts(c.n_experts, c.dim, c.expert_ffn_dim, c.moe_bias)
        self.w_up = Experts(c.n_experts, c.dim, c.expert_ffn_dim, c.moe_bias)
        self.w_down = Experts(c.n_experts, c.expert_ffn_dim, c.dim, c.moe_bias)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, dim) → each token's expert weights (N, top_k) in x's dtype and ids (N, top_k)."""
        probs = self.router(x).float().softmax(dim=-1)  # (N, n_experts)
        weights, experts = probs.topk(self.top_k, dim=-1)
        if self.norm_top_k:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(x.dtype), experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, dim = x.shape
        flat = x.reshape(B * T, dim)
        weights, experts = self.route(flat)
        if torch.compiler.is_compiling() or B * T * self.top_k <= self.n_experts:
            out = self._gathered(flat, weights, experts)
        else:
            out = self._per_expert(flat, weights, experts)
        return out.view(B, T, dim)

    def _gathered(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor
                  ) -> torch.Tensor:
        """Each token through its own experts' weights, gathered: x (N, dim) → (N, dim)."""
        gate = _project("nd,nkfd->nkf", x, self.w_gate, experts)  # (N, top_k, ffn)
        up = _project("nd,nkfd->nkf", x, self.w_up, experts)
        h = glu(self.activation, gate, up)
        down = _project("nkf,nkdf->nkd", h, self.w_down, experts)  # (N, top_k, dim)
        return torch.einsum("nkd,nk->nd", down, weights)

    def _per_expert(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor
                    ) -> torch.Tensor:
        """Expert by expert, over the tokens routed to each: x (N, dim) → (N, dim)."""
        out = torch.zeros_like(x)
        for e in experts.unique().tolist():
            rows, slot = torch.where(experts == e)  # tokens that chose e, and in which slot
            index = torch.tensor(e, device=x.device)
            h = x[rows]  # (n_e, dim)
            gate = _project("nd,fd->nf", h, self.w_gate, index)
            up = _project("nd,fd->nf", h, self.w_up, index)
            y = _project("nf,df->nd", glu(self.activation, gate, up), self.w_down, index)
            out.index_add_(0, rows, y * weights[rows, slot, None])
        return out


def _project(equation: str, x: torch.Tensor, experts: nn.Module, index: torch.Tensor
             ) -> torch.Tensor:
    """x through the experts in `index` (their weights gathered, then their biases added)."""
    y = torch.einsum(equation, x, experts.weights(index).to(x.dtype))
    return y if experts.bias is None else y + experts.bias[index].to(x.dtype)
