"""microgpt's forward pass transcribed in plain Python (scalar loops, float64), the oracle for
tests/test_model.py. It follows Karpathy's microgpt line by line: x = rmsnorm(wte[tok] +
wpe[pos]); per layer a pre-norm multi-head causal attention (scores / sqrt(head_dim)) with a
residual, then a pre-norm ReLU MLP with a residual; logits = lm_head(x); rmsnorm has no gain
(eps 1e-5); weights are (out, in) lists of lists."""
import math
import random


def init_state_dict(n_layer, vocab=27, d=16, block=16, std=0.08, seed=0):
    """microgpt's own init: every matrix gaussian with std 0.08, names as microgpt's."""
    rng = random.Random(seed)

    def matrix(rows, cols):
        return [[rng.gauss(0, std) for _ in range(cols)] for _ in range(rows)]
    sd = {"wte": matrix(vocab, d), "wpe": matrix(block, d), "lm_head": matrix(vocab, d)}
    for i in range(n_layer):
        for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
            sd[f"layer{i}.{name}"] = matrix(d, d)
        sd[f"layer{i}.mlp_fc1"] = matrix(4 * d, d)
        sd[f"layer{i}.mlp_fc2"] = matrix(d, 4 * d)
    return sd


def linear(x, w):
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def softmax(logits):
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def forward(sd, tokens, n_head=4):
    """Per-position logits (len(tokens) lists of vocab floats), one token at a time with a
    growing list of keys and values, as microgpt runs it."""
    n_layer = len({k.split(".")[0] for k in sd if k.startswith("layer")})
    d = len(sd["wte"][0])
    hd = d // n_head
    keys, values = [[] for _ in range(n_layer)], [[] for _ in range(n_layer)]
    all_logits = []
    for pos, tok in enumerate(tokens):
        x = rmsnorm([t + p for t, p in zip(sd["wte"][tok], sd["wpe"][pos])])
        for li in range(n_layer):
            residual = x
            x = rmsnorm(x)
            q = linear(x, sd[f"layer{li}.attn_wq"])
            keys[li].append(linear(x, sd[f"layer{li}.attn_wk"]))
            values[li].append(linear(x, sd[f"layer{li}.attn_wv"]))
            attended = []
            for h in range(n_head):
                lo = h * hd
                scores = [sum(q[lo + j] * k[lo + j] for j in range(hd)) / hd ** 0.5
                          for k in keys[li]]
                weights = softmax(scores)
                attended += [sum(w * v[lo + j] for w, v in zip(weights, values[li]))
                             for j in range(hd)]
            x = [a + b for a, b in zip(linear(attended, sd[f"layer{li}.attn_wo"]), residual)]
            residual = x
            hidden = [max(0.0, h) for h in linear(rmsnorm(x), sd[f"layer{li}.mlp_fc1"])]
            x = [a + b for a, b in zip(linear(hidden, sd[f"layer{li}.mlp_fc2"]), residual)]
        all_logits.append(linear(x, sd["lm_head"]))
    return all_logits


def loss(sd, tokens, n_head=4):
    """microgpt's loss of one document: mean over positions of -log p(next token)."""
    logits = forward(sd, tokens[:-1], n_head)
    return sum(-math.log(softmax(row)[t]) for row, t in zip(logits, tokens[1:])) / len(logits)
