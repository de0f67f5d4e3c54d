"""The C++ backend: the extension gptcore._C (csrc/) registers CPU kernels for the ops under
their bare names (TORCH_LIBRARY_IMPL); importing this module loads it and defines those ops'
schemas, fakes and autograd from their specs. The kernels check their own arguments
(csrc/common/checks.h)."""
import torch

from gptcore import _C  # noqa: F401  (registers the CPU kernels)
from gptcore.ops.spec import SPECS, define_schemas

define_schemas([name for name in SPECS
                if torch._C._dispatch_has_kernel_for_dispatch_key(f"gptcore::{name}", "CPU")])
