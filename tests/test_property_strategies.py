"""The property-test profiles and strategies: "ci" draws new examples every run and keeps
failures in the example database, and the strategies reach every kernel path (attention
lengths past 16 and 64, routing over 16+ experts, experts with more than 64 rows)."""
import torch
from hypothesis import find, settings

import test_properties as attention
import test_properties_moe as moe


def test_ci_profile_is_random_and_keeps_failures():
    ci = settings.get_profile("ci")
    assert not ci.derandomize and ci.database is not None and ci.print_blob
    assert settings.get_profile("long").max_examples >= 400


def _found(strategy, condition):
    return find(strategy, condition, settings=settings(max_examples=2000, database=None))


def test_attention_lengths_reach_every_band():
    for low, high in ((0, 15), (16, 63), (64, 10**6)):
        case, _, _ = _found(attention.attention_cases(), lambda d: low <= d[0]["Sq"] <= high
                            and d[0]["B"] * d[0]["Hq"] > 0)
        assert low <= case["Sq"] <= high
    lens = _found(attention.varlen_cases(), lambda d: max(d[0]["lens_q"], default=0) >= 64)
    assert max(lens[0]["lens_q"]) >= 64


def test_routing_reaches_16_experts():
    assert _found(moe.route_cases(), lambda c: c["E"] >= 16 and c["T"] > 0)["E"] >= 16


def test_experts_reach_more_than_64_rows_per_expert():
    def rows_per_expert(case):
        indices, _, _ = moe.expert_inputs(case)
        return int(torch.bincount(indices[indices >= 0].flatten()).max()) if indices.numel() else 0
    case = _found(moe.expert_cases(), lambda c: rows_per_expert(c) > 64)
    assert rows_per_expert(case) > 64
