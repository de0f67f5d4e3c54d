"""gptcore.nn.MoE: a Mixture-of-Experts feed-forward layer (router -> top-k -> GLU experts), with
optional shared experts behind a sigmoid gate as in Qwen2-MoE. Weights use Hugging Face's
Mixtral layout; all compute goes through gptcore's functional API (gptcore.moe, moe_experts)."""
import math

import torch
from torch import nn

from gptcore import ops


class MoE(nn.Module):
    """forward(x (..., d_model)) -> y (..., d_model). After each call `self.aux` holds the
    routing statistics of gptcore.moe: "router_logits", "load_balancing_loss", "z_loss",
    "tokens_per_expert" (add the losses to the training loss with your own coefficients).

    scoring: "softmax" (Mixtral, Qwen), "topk_softmax" (gpt-oss) or "sigmoid" (DeepSeek-V3,
    with a selection-only bias buffer `expert_bias` for auxiliary-loss-free balancing).
    activation "gpt_oss" also gives the experts biases, as gpt-oss has."""

    def __init__(self, d_model, d_ff, n_experts, top_k, *, scoring="softmax", renormalize=True,
                 activation="silu", n_shared_experts=0):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k: expected an int in [1, n_experts={n_experts}], got {top_k}")
        if n_shared_experts < 0:
            raise ValueError(f"n_shared_experts: expected >= 0, got {n_shared_experts}")
        self.d_model, self.d_ff, self.n_experts, self.top_k = d_model, d_ff, n_experts, top_k
        self.scoring, self.renormalize, self.activation = scoring, renormalize, activation
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.gate_up_proj = nn.Parameter(torch.empty(n_experts, 2 * d_ff, d_model))  # (E, 2I, H)
        self.down_proj = nn.Parameter(torch.empty(n_experts, d_model, d_ff))         # (E, H, I)
        with_bias = activation == "gpt_oss"
        self.gate_up_bias = nn.Parameter(torch.zeros(n_experts, 2 * d_ff)) if with_bias else None
        self.down_bias = nn.Parameter(torch.zeros(n_experts, d_model)) if with_bias else None
        self.register_buffer("expert_bias", torch.zeros(n_experts) if scoring == "sigmoid"
                             else None)
        self.n_shared_experts = n_shared_experts
        if n_shared_experts:
            # the shared experts are one wider expert that every token uses (Qwen2-MoE)
            d_shared = d_ff * n_shared_experts
            self.shared_gate_up_proj = nn.Parameter(torch.empty(1, 2 * d_shared, d_model))
            self.shared_down_proj = nn.Parameter(torch.empty(1, d_model, d_shared))
            self.shared_gate = nn.Linear(d_model, 1, bias=False)
        self.aux = {}
        # how the routed experts run: None here, in this process; gptcore.parallel installs a
        # strategy (layer, x (T, H)) -> (y, aux) that runs them on other processes
        self.dispatch = None
        self.reset_parameters()

    def reset_parameters(self):
        std_in, std_ff = 1 / math.sqrt(self.d_model), 1 / math.sqrt(self.d_ff)
        nn.init.normal_(self.gate_up_proj, std=std_in)
        nn.init.normal_(self.down_proj, std=std_ff)
        if self.n_shared_experts:
            nn.init.normal_(self.shared_gate_up_proj, std=std_in)
            nn.init.normal_(self.shared_down_proj, std=std_ff / math.sqrt(self.n_shared_experts))

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, self.d_model)                                    # (T, H)
        y, self.aux = self._routed_experts(x)
        if self.n_shared_experts:
            gate = torch.sigmoid(self.shared_gate(x))                      # (T, 1)
            everyone = torch.zeros(x.shape[0], 1, dtype=torch.int64, device=x.device)
            y = y + ops.moe_experts(x, everyone, gate, self.shared_gate_up_proj,
                                    self.shared_down_proj, activation=self.activation)
        return y.reshape(shape)

    def _routed_experts(self, x):
        """x (T, H) -> (y (T, H), aux): the router and the routed experts."""
        if self.dispatch is not None:
            return self.dispatch(self, x)
        return ops.moe(x, self.router.weight, self.gate_up_proj, self.down_proj, self.top_k,
                       scoring=self.scoring, renormalize=self.renormalize, bias=self.expert_bias,
                       activation=self.activation, gate_up_bias=self.gate_up_bias,
                       down_bias=self.down_bias)

    @property
    def total_params(self):
        """Of the whole layer, the experts other processes hold (gptcore.parallel) included."""
        remote = self.dispatch.remote_params(self) if self.dispatch is not None else 0
        return sum(p.numel() for p in self.parameters()) + remote

    @property
    def active_params(self):
        """Parameters one token uses: router, top_k of the experts, the shared experts."""
        per_expert = sum(p[0].numel() for p in (self.gate_up_proj, self.down_proj,
                                                self.gate_up_bias, self.down_bias)
                         if p is not None)
        routed = self.n_experts * per_expert
        return self.total_params - routed + self.top_k * per_expert

    def extra_repr(self):
        return (f"d_model={self.d_model}, d_ff={self.d_ff}, n_experts={self.n_experts}, "
                f"top_k={self.top_k}, scoring={self.scoring!r}, activation={self.activation!r}, "
                f"n_shared_experts={self.n_shared_experts}"
                + (f", dispatch={self.dispatch!r}" if self.dispatch is not None else ""))
