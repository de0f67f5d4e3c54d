"""--device, --dtype bf16 and --compile of `gptcore train` (gptcore.training.precision)."""
import pytest
import torch

from gptcore import GPT, GPTConfig
from gptcore.training import precision
from gptcore.training.objective import next_token as next_token_loss


def _setup():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, block_size=16, n_layer=2, d_model=32, n_head=2,
                          d_ff=48, mlp="swiglu"))
    batch = {"idx": torch.randint(17, (3, 16)), "targets": torch.randint(17, (3, 16))}
    return model, batch


def test_bf16_autocast_computes_in_bf16_and_keeps_fp32_weights():
    model, batch = _setup()
    seen = []
    model.lm_head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    loss = precision.wrap(next_token_loss, "cpu", "bf16")(model, batch)
    exact = next_token_loss(model, batch)
    assert seen == [torch.bfloat16, torch.float32]
    # bf16 matmuls carry 8 mantissa bits: a loss of ~2.8 moves by ~1e-2, not by 0.1
    assert abs(float(loss) - float(exact)) < 0.05
    loss.backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in model.parameters())


def test_compiled_loss_equals_eager():
    model, batch = _setup()
    compiled = precision.wrap(next_token_loss, "cpu", compile=True)(model, batch)
    eager = next_token_loss(model, batch)
    # the same fp32 graph, fused differently by inductor: ~1e-7 apart
    assert abs(float(compiled) - float(eager)) < 1e-5


def test_devices_and_dtypes_are_checked():
    assert precision.resolve_device("cpu") == torch.device("cpu")
    assert precision.resolve_device("auto").type == ("cuda" if torch.cuda.is_available()
                                                     else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device: expected a device this machine has"):
            precision.resolve_device("cuda")
    with pytest.raises(ValueError, match="dtype: expected one of"):
        precision.wrap(next_token_loss, "cpu", "fp16")
