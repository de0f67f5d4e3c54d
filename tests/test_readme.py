"""README's measured figures are generated from committed results files (bench/readme_tables.py,
bench/record.py): the blocks must match their files, and the machinery must catch an edit."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _load(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_readme_blocks_match_their_results_files():
    run = subprocess.run([sys.executable, str(BENCH / "readme_tables.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_results_file_is_named_by_kind_and_stamp():
    tables = _load("readme_tables")
    files = sorted((BENCH / "results").glob("*.json"))
    assert files
    for path in files:
        assert tables.kind_of(path.name)      # raises on a name without kind and stamp


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A results directory holding one bench/record.py run of a tiny command."""
    record = _load("record")
    command = [sys.executable, "-c", "print('step 1'); print('{\"val_loss\": 1.5, \"steps\": 7}')"]
    status, path = record.record("train-tiny", command, directory=tmp_path)
    assert status == 0
    tables = _load("readme_tables")
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    return tables, path


def test_record_keeps_the_command_output_and_its_json_summary(recorded):
    _, path = recorded
    data = json.loads(path.read_text())
    assert data["stdout"] == 'step 1\n{"val_loss": 1.5, "steps": 7}\n'
    assert data["result"] == {"val_loss": 1.5, "steps": 7}
    assert data["returncode"] == 0 and data["environment"]["commit"]


def test_a_block_is_regenerated_from_its_file_and_an_edit_is_caught(recorded):
    tables, path = recorded
    text = f"intro\n<!-- results: {path.name} -->\nold text\n<!-- end results -->\noutro\n"
    new, stale = tables.render(text, refresh=False)
    assert stale == []
    body = new.split(f"<!-- results: {path.name} -->\n")[1].split("<!-- end results -->")[0]
    row = next(line for line in body.splitlines() if line.startswith("| `"))
    assert row.endswith("| 7 | - | - | - | - | 1.500 |"), row   # steps 7, val loss 1.5
    assert new.startswith("intro\n") and new.endswith("outro\n")
    edited = new.replace("1.500", "1.400")
    assert tables.render(edited, refresh=False)[0] != edited   # --check would fail


def test_a_newer_file_of_the_same_kind_makes_the_block_stale(recorded):
    tables, path = recorded
    newer = path.with_name("train-tiny-29991231-235959.json")
    newer.write_text(path.read_text())
    text = f"<!-- results: {path.name} -->\n<!-- end results -->"
    _, stale = tables.render(text, refresh=False)
    assert stale == [path.name]
    refreshed, _ = tables.render(text, refresh=True)
    assert newer.name in refreshed and path.name not in refreshed


def test_ceiling_is_peer_time_over_free_time_plus_work_at_the_roof():
    tables = _load("readme_tables")
    roofs = {"copy_gbs": 10.0, "read_gbs": 20.0, "gemm_gflops": 100.0, "bf16_gemm_gflops": 400.0}
    # decode only reads its weights: 1 GB at the 20 GB/s read roof is 0.05 s; 2.0 / (0.5 + 0.05)
    row = {"peer_s": 2.0, "dtype": "fp32", "extra": {"free_s": 0.5, "switched_bytes": 1e9}}
    assert tables._ceiling(row, roofs) == "3.64x"
    # a file measured before the read roof existed: 1 GB at the 10 GB/s copy roof, 2.0 / 0.6
    old = {k: v for k, v in roofs.items() if k != "read_gbs"}
    assert tables._ceiling(row, old) == "3.33x"
    # bf16 prefill: 40 GFLOP at 400 GFLOP/s is 0.1 s; 1.0 / (0.15 + 0.1)
    row = {"peer_s": 1.0, "dtype": "bf16", "extra": {"free_s": 0.15, "switched_flops": 40e9}}
    assert tables._ceiling(row, roofs) == "4.00x"
    assert tables._ceiling({"peer_s": 1.0, "dtype": "fp32", "extra": {}}, roofs) == "-"


def test_model_work_counts_a_tiny_llama_by_hand():
    transformers = pytest.importorskip("transformers")
    models = _load("bench_models")
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1)
    model = transformers.AutoModelForCausalLM.from_config(config)
    flops, weight_bytes = models.work(model, B=1, S=2)
    # matrices a token passes: q 64, k 32, v 32, o 64, gate 128, up 128, down 128 = 576 values;
    # prefill of 2 tokens: 2 * 2 * 576, the output layer (256) on the last token only, and
    # attention: 3 causal pairs x 2 heads x D=4 x 4 FLOPs (QK^T and PV)
    assert flops == [2 * 2 * 576 + 2 * 256 + 3 * 2 * 4 * 4, 3 * 2 * 4 * 4]
    # decode reads every weight but the embedding table (one row of it): 576 + 256 + three
    # norms of 8, fp32; nothing of it is experts
    assert weight_bytes == [(576 + 256 + 24) * 4, 0.0]


def test_model_work_counts_the_routed_experts_of_a_tiny_mixtral_by_hand():
    transformers = pytest.importorskip("transformers")
    models = _load("bench_models")
    config = transformers.MixtralConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1, num_local_experts=4,
                                        num_experts_per_tok=2)
    model = transformers.AutoModelForCausalLM.from_config(config)
    flops, weight_bytes = models.work(model, B=1, S=2)
    # experts: gate_up 4 x 32 x 8 + down 4 x 8 x 16 = 1536 values, a token passes 2 of 4 (768);
    # attention q, k, v, o 192 and the router 32; output layer 256; attention 3 pairs as above
    experts, attention = 768, 3 * 2 * 4 * 4
    assert flops == [2 * 2 * (192 + 32 + experts) + 2 * 256 + attention,
                     2 * 2 * experts + attention]
    assert weight_bytes == [(192 + 32 + experts + 256 + 24) * 4, experts * 4]
