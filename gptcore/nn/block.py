"""gptcore.nn.Block: one pre-norm transformer block, x + attn(norm(x)) then x + ffn(norm(x))."""
from torch import nn


class Block(nn.Module):
    """Pre-norm residual block over any attention and feed-forward modules, and norms that take
    forward(x, residual) -> (norm(x + residual), x + residual) like gptcore.nn.RMSNorm.

    forward(x, cache=None, **attention_kwargs): x (B, S, d) or packed (T, d), same shape out;
    the keyword arguments (positions, cu_seqlens, max_seqlen) go to the attention."""

    def __init__(self, attn, ffn, attn_norm, ffn_norm):
        super().__init__()
        self.attn_norm, self.attn = attn_norm, attn
        self.ffn_norm, self.ffn = ffn_norm, ffn

    def forward(self, x, cache=None, **attention_kwargs):
        a = self.attn(self.attn_norm(x), cache, **attention_kwargs)
        # under autocast the attention output is bf16 while the residual stream stays fp32
        y, x = self.ffn_norm(a.to(x.dtype), residual=x)   # x + attention and its norm, one pass
        return x + self.ffn(y)
