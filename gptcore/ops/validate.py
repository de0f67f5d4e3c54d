"""Input checks for the public API, in one place. Each raises TypeError (wrong kind or dtype)
or ValueError (wrong shape or value) naming the argument, what was expected and what came.

Checks that read tensor data (index ranges, cu_seqlens order) run only in eager mode: under
torch.compile they would force a graph break, and the C++ kernels repeat them."""
import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def tensor(name, t, ndim=None, dtypes=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {t.dtype}")


def optional_tensor(name, t, shape, like, dtypes=FLOAT_DTYPES):
    """`t` is None or a floating tensor of `shape` on `like`'s device."""
    if t is None:
        return
    tensor(name, t, dtypes=dtypes)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    same_device(name, t, like)


def same_device(name, t, like):
    if t.device != like.device:
        raise ValueError(f"{name}: expected a tensor on {like.device} (like the input), "
                         f"got one on {t.device}")


def same_dtype(names, tensors):
    dtypes = [t.dtype for t in tensors]
    if len(set(dtypes)) > 1:
        given = ", ".join(f"{n}={d}" for n, d in zip(names, dtypes))
        raise TypeError(f"{'/'.join(names)}: expected one dtype, got {given}")


def choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")


def integer(name, value, low, high=None):
    """An int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: expected an int {bound}, got {value}")


def positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}: expected a finite number > 0, got {value}")


def eager():
    """True when checks may read tensor data (not while torch.compile traces)."""
    return not torch.compiler.is_compiling()


# ----------------------------------------------------------------------------- attention

def attention_options(q_heads, head_dim, causal, scale, window, sinks, softcap, like):
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    if not 1 <= head_dim <= 256:
        raise ValueError(f"q: expected head dim D in [1, 256], got D={head_dim}")
    if scale is not None:
        positive("scale", scale)
    if softcap is not None:
        positive("softcap", softcap)
    if isinstance(window, tuple) or isinstance(window, list):
        if len(window) != 2:
            raise ValueError(f"window: expected (left, right), got {window!r}")
        for side, w in zip(("left", "right"), window):
            integer(f"window[{side}]", w, -1)
    elif window is not None:
        integer("window", window, 1)
    optional_tensor("sinks", sinks, (q_heads,), like)


def attention(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        tensor(name, t, ndim=4, dtypes=FLOAT_DTYPES)
    same_dtype(("q", "k", "v"), (q, k, v))
    same_device("k", k, q)
    same_device("v", v, q)
    B, Hq, Sq, D = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k, v: expected equal shapes (B, Hkv, Sk, D), got {tuple(k.shape)} "
                         f"and {tuple(v.shape)}")
    if k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k: expected shape ({B}, Hkv, Sk, {D}) to match q {tuple(q.shape)}, "
                         f"got {tuple(k.shape)}")
    kv_heads("k", Hq, k.shape[1])


def kv_heads(name, q_heads, count):
    """Hkv >= 1 (a zero has no meaning: every query head reads one kv head) dividing Hq."""
    if count == 0:
        raise ValueError(f"{name}: expected at least one kv head (Hkv >= 1), got Hkv=0")
    if q_heads % count != 0:
        raise ValueError(f"{name}: expected a kv head count dividing q's {q_heads} heads, "
                         f"got {count}")


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                     dtypes=FLOAT_DTYPES):
    for name, t in (("q", q), ("k", k), ("v", v)):
        tensor(name, t, ndim=3, dtypes=dtypes)
    same_dtype(("q", "k", "v"), (q, k, v))
    same_device("k", k, q)
    same_device("v", v, q)
    if k.shape != v.shape:
        raise ValueError(f"k, v: expected equal shapes (Tk, Hkv, D), got {tuple(k.shape)} "
                         f"and {tuple(v.shape)}")
    if k.shape[2] != q.shape[2]:
        raise ValueError(f"k: expected head dim {q.shape[2]} like q, got {k.shape[2]}")
    kv_heads("k", q.shape[1], k.shape[1])
    for name, cu, total, max_len in (("cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q),
                                     ("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k)):
        tensor(name, cu, ndim=1, dtypes=(torch.int32,))
        same_device(name, cu, q)
        if cu.shape[0] < 1:
            raise ValueError(f"{name}: expected N+1 >= 1 offsets, got an empty tensor")
        integer(name.replace("cu_seqlens", "max_seqlen"), max_len, 0)
        if eager():
            offsets(name, cu, total, max_len)
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise ValueError(f"cu_seqlens_k: expected {cu_seqlens_q.shape[0]} offsets like "
                         f"cu_seqlens_q, got {cu_seqlens_k.shape[0]}")


def offsets(name, cu, total, max_len):
    lengths = cu[1:] - cu[:-1]
    if int(cu[0]) != 0:
        raise ValueError(f"{name}: expected offsets starting at 0, got {int(cu[0])}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"{name}: expected non-decreasing offsets, got {cu.tolist()}")
    if int(cu[-1]) != total:
        raise ValueError(f"{name}: expected the last offset to equal the packed length {total}, "
                         f"got {int(cu[-1])}")
    longest = int(lengths.max()) if lengths.numel() else 0
    if longest > max_len:
        seq = name.replace("cu_seqlens", "max_seqlen")
        raise ValueError(f"{seq}: expected at least the longest sequence ({longest}), "
                         f"got {max_len}")


# ----------------------------------------------------------------------------- MoE

def route(logits, top_k, scoring, renormalize, bias, dtypes=FLOAT_DTYPES):
    tensor("logits", logits, ndim=2, dtypes=dtypes)
    experts("logits", logits.shape[1], tuple(logits.shape))
    integer("top_k", top_k, 1, logits.shape[1])
    choice("scoring", scoring, ("softmax", "topk_softmax", "sigmoid"))
    if not isinstance(renormalize, bool):
        raise TypeError(f"renormalize: expected a bool, got {type(renormalize).__name__}")
    if bias is not None and scoring != "sigmoid":
        raise ValueError(f"bias: only scoring='sigmoid' takes a selection bias, got scoring="
                         f"{scoring!r}")
    optional_tensor("bias", bias, (logits.shape[1],), logits, dtypes)


def moe_experts(x, indices, weights, gate_up_shape, down_shape, num_experts, activation,
                gate_up_bias, down_bias, like_weights, dtypes=FLOAT_DTYPES):
    tensor("x", x, ndim=2, dtypes=dtypes)
    tensor("indices", indices, ndim=2,
           dtypes=(torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8))
    tensor("weights", weights, ndim=2, dtypes=dtypes)
    T, H = x.shape
    if tuple(indices.shape[:1]) != (T,) or indices.shape != weights.shape:
        raise ValueError(f"indices, weights: expected shape ({T}, k), got {tuple(indices.shape)} "
                         f"and {tuple(weights.shape)}")
    same_device("indices", indices, x)
    same_device("weights", weights, x)
    if indices.shape[1] == 0:
        raise ValueError(f"indices: expected top_k >= 1 choices per token, got shape "
                         f"{tuple(indices.shape)}")
    if H == 0:
        raise ValueError(f"x: expected a hidden size H >= 1, got shape {tuple(x.shape)}")
    E, two_i, h = gate_up_shape
    experts("gate_up_proj", E, tuple(gate_up_shape))
    if h != H or two_i % 2 != 0:
        raise ValueError(f"gate_up_proj: expected shape (E, 2I, {H}), got {tuple(gate_up_shape)}")
    if two_i == 0:
        raise ValueError(f"gate_up_proj: expected an intermediate size I >= 1, got shape "
                         f"{tuple(gate_up_shape)}")
    if tuple(down_shape) != (E, H, two_i // 2):
        raise ValueError(f"down_proj: expected shape ({E}, {H}, {two_i // 2}) to match "
                         f"gate_up_proj {tuple(gate_up_shape)}, got {tuple(down_shape)}")
    choice("activation", activation, ("silu", "gelu", "gpt_oss"))
    optional_tensor("gate_up_bias", gate_up_bias, (E, two_i), like_weights, dtypes)
    optional_tensor("down_bias", down_bias, (E, H), like_weights, dtypes)
    if eager() and indices.device.type == "cpu" and indices.numel():
        low, high = int(indices.min()), int(indices.max())
        if low < -1 or high >= num_experts:
            bad = low if low < -1 else high
            raise ValueError(f"indices: expected expert ids in [0, {num_experts}) or -1, "
                             f"got {bad}")


def experts(name, count, shape):
    """E >= 1: a router or expert bank with no expert has no meaning."""
    if count == 0:
        raise ValueError(f"{name}: expected at least one expert (E >= 1), got shape {shape}")


def mxfp4_input(w):
    tensor("w", w, dtypes=FLOAT_DTYPES)
    if w.dim() < 1 or w.shape[-1] % 32 != 0:
        raise ValueError(f"w: expected a last dim that is a multiple of 32, got shape "
                         f"{tuple(w.shape)}")
    if eager() and not bool(torch.isfinite(w).all()):
        raise ValueError("w: expected finite values (MXFP4 has no inf), got inf or nan")


# ----------------------------------------------------------------------------- direct op calls
# The Triton ops (gptcore/backends/triton/*.py) call these on their own arguments, so that a direct
# torch.ops.gptcore.triton_* call that skipped the checks above raises instead of launching a
# kernel on shapes it cannot handle. The C++ ops do the same in csrc/common/checks.h.

def attention_op(q, k, v, sinks, rank, dtypes=FLOAT_DTYPES):
    """Arguments of the attention ops: q, k, v of `rank` dims (4 dense, 3 packed), sinks (Hq,).
    `dtypes`: the float dtypes the op takes (the reference also takes fp64, for gradcheck)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        tensor(name, t, ndim=rank, dtypes=dtypes)
    same_dtype(("q", "k", "v"), (q, k, v))
    if k.shape != v.shape or k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k, v: expected equal shapes with q's head dim {q.shape[-1]}, got "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    if rank == 4 and k.shape[0] != q.shape[0]:
        raise ValueError(f"k: expected q's batch {q.shape[0]}, got {k.shape[0]}")
    if not 1 <= q.shape[-1] <= 256:
        raise ValueError(f"q: expected head dim D in [1, 256], got D={q.shape[-1]}")
    kv_heads("k", q.shape[1], k.shape[1])
    optional_tensor("sinks", sinks, (q.shape[1],), q, dtypes)


def attention_grads_op(q, out, dout, lse, dlse, dtypes=FLOAT_DTYPES):
    """The backward ops' extra arguments: out, dout shaped like q; lse, dlse like q without D."""
    for name, t, want in (("out", out, q.shape), ("dout", dout, q.shape),
                          ("lse", lse, q.shape[:-1]), ("dlse", dlse, q.shape[:-1])):
        tensor(name, t, dtypes=dtypes)
        if t.shape != want:
            raise ValueError(f"{name}: expected shape {tuple(want)}, got {tuple(t.shape)}")
    same_dtype(("q", "out"), (q, out))


def experts_op(x, indices, weights, gate_up_shape, down_shape, activation, gate_up_bias,
               down_bias, dtypes=FLOAT_DTYPES):
    """Arguments of the MoE expert ops (shapes of the float or MXFP4-logical weights)."""
    moe_experts(x, indices, weights, gate_up_shape, down_shape, gate_up_shape[0], activation,
                gate_up_bias, down_bias, x, dtypes)
