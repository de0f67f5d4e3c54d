"""The reference backend: every op's spec.reference (gptcore.ref underneath) as the `ref_` ops,
for CPU and CUDA tensors. It also takes fp64, which torch.autograd.gradcheck needs."""
import torch

from gptcore.ops.spec import SPECS, define
from gptcore.ops.validate import FLOAT_DTYPES

define("ref_", {name: spec.reference for name, spec in SPECS.items()},
       dispatch_keys=("CPU", "CUDA"), dtypes=FLOAT_DTYPES + (torch.float64,))
