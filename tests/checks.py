"""Comparison helper shared by the Triton interpreter tests."""


def close_scaled(name, got, want, tol):
    """|got - want| <= tol * max(1, max|want|); the failure message prints the max difference."""
    got, want = got.float(), want.float()
    err = (got - want).abs().max().item() if want.numel() else 0.0
    bound = tol * max(want.abs().max().item() if want.numel() else 0.0, 1.0)
    assert err <= bound, f"{name}: max |diff| {err:.3g} > {bound:.3g}"
