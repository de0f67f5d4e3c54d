"""GPTConfig: every architectural choice of a gptcore.GPT, and the named presets."""
import dataclasses
from dataclasses import dataclass, field


@dataclass
class GPTConfig:
    vocab_size: int = 27            # tokens; microgpt's: 'a'..'z' -> 0..25, BOS -> 26
    block_size: int = 16            # longest sequence the model takes (learned positions stop here)
    n_layer: int = 1                # transformer blocks
    d_model: int = 16               # residual stream width
    n_head: int = 4                 # query heads
    n_kv_head: int | None = None    # key/value heads (GQA when fewer); None: n_head
    head_dim: int | None = None     # per-head width; None: d_model // n_head
    d_ff: int | None = None         # hidden width of the dense MLP or of each expert; None: 4*d_model
    mlp: str = "relu"               # dense MLP activation: "relu", "gelu" or "swiglu"
    n_experts: int = 0              # 0: dense MLP in every block; > 0: an MoE layer instead
    top_k: int = 2                  # experts per token (MoE only)
    moe_scoring: str = "softmax"    # router scoring, as gptcore.route: "softmax", "topk_softmax", "sigmoid"
    moe_activation: str = "silu"    # expert activation, as gptcore.moe_experts: "silu", "gelu", "gpt_oss"
    moe_aux_coef: float = 0.01      # weight of the load-balancing loss in GPT.aux_loss()
    pos: str = "rope"               # positions: "learned" (absolute table wpe) or "rope"
    rope_theta: float = 10000.0     # RoPE base (pos == "rope")
    windows: tuple = ()             # per-layer sliding window (int) or None for full; () = all full
    sinks: bool = False             # learned attention sinks per head (gpt-oss)
    causal: bool = True             # False: bidirectional attention (diffusion LM, embeddings)
    norm_gain: bool = True          # RMSNorm with a learned gain; False: microgpt's plain rmsnorm
    norm_eps: float = 1e-5          # RMSNorm epsilon
    embed_norm: bool = False        # normalise the embedding sum before the first block (microgpt)
    final_norm: bool = True         # normalise before the LM head (microgpt has none)
    tie_embeddings: bool = False    # the LM head shares the token embedding's weight
    bias: bool = False              # biases in the attention and dense MLP projections
    init_std: float = 0.02          # std of the gaussian init of every weight matrix and table
    extra: dict = field(default_factory=dict)  # free-form metadata (tokenizer, data), saved as is

    def __post_init__(self):
        self.windows = tuple(self.windows)
        if self.pos not in ("learned", "rope"):
            raise ValueError(f"pos: expected 'learned' or 'rope', got {self.pos!r}")
        if self.windows and len(self.windows) != self.n_layer:
            raise ValueError(f"windows: expected {self.n_layer} entries (one per layer) or (), "
                             f"got {len(self.windows)}")
        if self.n_experts < 0 or (self.n_experts and not 1 <= self.top_k <= self.n_experts):
            raise ValueError(f"top_k: expected 1 <= top_k <= n_experts={self.n_experts}, got "
                             f"{self.top_k}")
        for name in ("vocab_size", "block_size", "n_layer", "d_model", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")

    def window(self, layer):
        """The sliding window of layer `layer`, or None."""
        return self.windows[layer] if self.windows else None

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def preset(cls, name, **overrides):
        """A named configuration, with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], **overrides})


PRESETS = {
    # Karpathy's microgpt exactly: 1 layer, d16, 4 heads, block 16, ReLU MLP 4x, rmsnorm after
    # the embedding sum and before each sublayer, no gain, no bias, no final norm, untied head.
    "microgpt": dict(vocab_size=27, block_size=16, n_layer=1, d_model=16, n_head=4, d_ff=64,
                     mlp="relu", pos="learned", norm_gain=False, embed_norm=True,
                     final_norm=False, init_std=0.08),
    # a few dense layers with RoPE and SwiGLU for the names data set
    "names": dict(vocab_size=27, block_size=32, n_layer=4, d_model=64, n_head=4, d_ff=192,
                  mlp="swiglu", pos="rope"),
    # the same trunk with an MoE feed-forward: 8 experts, top 2
    "names-moe": dict(vocab_size=27, block_size=32, n_layer=4, d_model=64, n_head=4, d_ff=96,
                      n_experts=8, top_k=2, moe_activation="silu", pos="rope"),
    # gpt-oss in miniature: alternating window-128 / full layers, sinks, GQA 8/2, MoE with the
    # gpt_oss activation and top-k-then-softmax routing
    "gpt-oss-tiny": dict(vocab_size=27, block_size=512, n_layer=4, d_model=64, n_head=8,
                         n_kv_head=2, head_dim=16, d_ff=64, n_experts=8, top_k=2,
                         moe_scoring="topk_softmax", moe_activation="gpt_oss", pos="rope",
                         rope_theta=150000.0, windows=(128, None, 128, None), sinks=True),
    # nanoGPT's shakespeare_char sizes (README CPU run: 4 layers, 4 heads, width 128, block 64)
    # as a Llama-style GPT (RoPE, RMSNorm, SwiGLU, tied embeddings, no biases: exportable to
    # transformers' Llama); d_ff 344 = 4*128*2/3 rounded up to 8 keeps nanoGPT's MLP size;
    # no dropout (nanoGPT's run sets 0). vocab_size comes from the text's characters.
    "shakespeare-char": dict(vocab_size=66, block_size=64, n_layer=4, d_model=128, n_head=4,
                             d_ff=344, mlp="swiglu", pos="rope", tie_embeddings=True),
    # nanoGPT's GPU recipe: 6 layers, 6 heads, width 384, block 256 (its dropout 0.2 aside)
    "shakespeare-char-gpu": dict(vocab_size=66, block_size=256, n_layer=6, d_model=384,
                                 n_head=6, d_ff=1024, mlp="swiglu", pos="rope",
                                 tie_embeddings=True),
    # masked diffusion (LLaDA, gptcore/diffusion/llada.py): the names trunks with bidirectional
    # attention, a mask token after the 27 name tokens, block 16 = the longest name (15) + end.
    # Learned positions: with RoPE alone an all-mask canvas looks the same from every position
    # (measured: left-to-right sampling then put the end token first in 99% of rows).
    "names-diffusion": dict(vocab_size=28, block_size=16, n_layer=4, d_model=64, n_head=4,
                            d_ff=192, mlp="swiglu", pos="learned", causal=False,
                            extra={"objective": "diffusion"}),
    "names-diffusion-moe": dict(vocab_size=28, block_size=16, n_layer=4, d_model=64, n_head=4,
                                d_ff=96, n_experts=8, top_k=2, moe_activation="silu",
                                pos="learned", causal=False, extra={"objective": "diffusion"}),
}
