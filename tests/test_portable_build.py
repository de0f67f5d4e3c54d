"""A non-x86 build compiles only the portable path: CMake leaves out csrc/*/*_avx2.cpp and
*_avx512.cpp there, so every use of their functions in the other sources must sit under
`#if GPTCORE_X86`, or the module fails to link or load. The full proof, a build configured for
aarch64 that loads and matches gptcore.ref, is scripts/check_portable_build.py (minutes)."""
import re
from pathlib import Path

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SIMD_FILE = re.compile(r"_(avx2|avx512)\.cpp$")
# A function or table defined in a SIMD file: foo_avx2(...), foo_avx512(...), kAttentionAvx2
# (use_avx2() and its kin are the portable level checks of cpu_features.h).
SIMD_USE = re.compile(r"\b((?!use_)\w+_avx(2|512)|kAttentionAvx(2|512))\b")
X86_ONLY = re.compile(r"immintrin|_mm\d*_|__builtin_cpu_")


def unguarded_simd_uses(text):
    """Lines (number, text) that use SIMD code outside every `#if GPTCORE_X86` block."""
    stack, found = [], []  # stack: whether each open #if is the GPTCORE_X86 guard
    for number, line in enumerate(text.splitlines(), 1):
        directive = line.strip()
        if directive.startswith("#if"):
            stack.append(directive.startswith("#if GPTCORE_X86"))
        elif directive.startswith("#endif"):
            stack.pop()
        elif directive.startswith("#else") and stack:
            stack[-1] = False
        elif (SIMD_USE.search(line) or X86_ONLY.search(line)) and not any(stack):
            if not directive.startswith("//"):
                found.append((number, directive))
    return found


def test_the_checker_finds_an_unguarded_call():
    code = "void f() {\n#if GPTCORE_X86\n  g_avx2(x);\n#endif\n  h_avx512(y);\n}\n"
    assert unguarded_simd_uses(code) == [(5, "h_avx512(y);")]


def test_simd_code_is_used_only_under_the_x86_guard():
    sources = [p for p in sorted(CSRC.rglob("*.cpp")) if not SIMD_FILE.search(p.name)]
    assert len(sources) > 10
    bad = {p.name: hits for p in sources if (hits := unguarded_simd_uses(p.read_text()))}
    assert not bad, f"SIMD code outside #if GPTCORE_X86: {bad}"


def test_cmake_leaves_simd_sources_out_off_x86():
    cmake = (CSRC.parent / "CMakeLists.txt").read_text()
    assert "list(REMOVE_ITEM CPU_SOURCES ${AVX2_SOURCES} ${AVX512_SOURCES})" in cmake
    assert "GPTCORE_X86=0" in cmake
