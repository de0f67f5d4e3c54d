"""Every random number generator a training step may draw from (Python's, torch's CPU and CUDA
ones), captured as JSON and restored, so that a resumed run draws what an uninterrupted one
would have drawn."""
import base64
import random

import torch


def _encode(state):
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def _decode(text):
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def get_state():
    """{"python", "torch", "cuda"}: JSON-serialisable."""
    version, internal, gauss = random.getstate()
    return {"python": [version, list(internal), gauss],
            "torch": _encode(torch.get_rng_state()),
            "cuda": [_encode(s) for s in torch.cuda.get_rng_state_all()]
            if torch.cuda.is_available() else []}


def set_state(state):
    """Restores what get_state returned (CUDA states only where this process has the devices)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(_decode(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode(s) for s in state["cuda"]])
