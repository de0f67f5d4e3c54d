"""The argument checks the op specs (gptcore/ops/<op>.py) are written with. Each raises TypeError
(wrong kind or dtype) or ValueError (wrong shape or value) naming the argument, what was
expected and what came.

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

def attention_options(causal, scale, window, softcap):
    """The public attention functions' own arguments (the ops see them folded into flags)."""
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
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


def head_dim(name, size):
    if not 1 <= size <= 256:
        raise ValueError(f"{name}: expected head dim D in [1, 256], got D={size}")


def kv_heads(name, q_heads, count):
    """Hkv >= 1 (a zero has no meaning: every query head reads one kv head) dividing Hq."""
    if count == 0:
        raise ValueError(f"{name}: expected at least one kv head (Hkv >= 1), got Hkv=0")
    if q_heads % count != 0:
        raise ValueError(f"{name}: expected a kv head count dividing q's {q_heads} heads, "
                         f"got {count}")


def packed_offsets(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, q, k):
    """cu_seqlens int32 (N+1,) on q's device, one pair per sequence, describing q and k."""
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

def experts(name, count, shape):
    """E >= 1: a router or expert bank with no expert has no meaning."""
    if count == 0:
        raise ValueError(f"{name}: expected at least one expert (E >= 1), got shape {shape}")
