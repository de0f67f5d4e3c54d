"""The C++ backend: the extension gptcore._C (csrc/) registers CPU kernels for the ops under
their bare names (TORCH_LIBRARY_IMPL); importing this module loads it and defines those ops'
schemas, fakes and autograd from their specs. The kernels check their own arguments
(csrc/common/checks.h). GPTCORE_ISA=portable|avx2|avx512|avx512_bf16 in the environment lowers
the kernels' ISA level for the process (as gptcore._C.set_isa does)."""
import os

from gptcore import _C
from gptcore.ops.spec import SPECS, define_schemas, has_op

# An extension built from older sources lacks the newer ops: those fall back to the reference.
define_schemas([name for name in SPECS if has_op(name, "CPU")])

if os.environ.get("GPTCORE_ISA"):
    try:
        _C.set_isa(os.environ["GPTCORE_ISA"])
    except ValueError as err:
        raise ValueError(f"GPTCORE_ISA: expected one of portable, avx2, avx512, avx512_bf16, "
                         f"got {os.environ['GPTCORE_ISA']!r}") from err
