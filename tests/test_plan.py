"""Plans as plain data: YAML or dict, checked with clear errors, rules resolved per tensor."""
import numpy as np
import pandas as pd
import pytest

from memsim.errors import MemsimError
from memsim.plan import load_plan
from memsim.plan.placement import home_tiers, layer_numbers

TIERS = ["gpu.hbm", "host.ddr", "host.nvme"]
TENSORS = pd.DataFrame({
    "tensor_id": [0, 1, 2, 3, 4],
    "name": ["embed.weight", "layers.0.attn.q_proj.weight", "layers.1.mlp.up_proj.weight",
             "layers.12.attn.k_cache", ""],
    "role": ["weight", "weight", "weight", "kv_cache", "activation"],
})


def test_rules_apply_in_order_by_role_layer_name_and_id():
    plan = load_plan({"placement": [
        {"tensor": 4, "tier": "host.nvme"},
        {"layer": "0", "role": "weight", "tier": "gpu.hbm"},
        {"name": "layers.*.mlp.*", "tier": "host.nvme"},
        {"role": "weight", "tier": "host.ddr"},
        {"layer": "10-15", "tier": "host.ddr"},
    ]})
    home = home_tiers(TENSORS, plan, np.full(5, "gpu.hbm", dtype=object), TIERS)
    assert list(home) == ["host.ddr", "gpu.hbm", "host.nvme", "host.ddr", "host.nvme"]


def test_layer_numbers_come_from_layers_n_in_names():
    assert list(layer_numbers(TENSORS["name"])) == [-1, 0, 1, 12, -1]


def test_a_plan_reads_from_yaml(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("placement:\n  - {role: weight, tier: host.ddr}\nprefetch_depth: 3\neviction: next_use\n")
    plan = load_plan(path)
    assert plan.prefetch_depth == 3 and plan.eviction == "next_use" and plan.moves_data
    assert not load_plan(None).moves_data


@pytest.mark.parametrize("text, expected", [
    ("evicton: lru\n", "plan.yaml: plan key evicton: unknown key (did you mean 'eviction'?)"),
    ("eviction: fifo\n", "plan key eviction: Input should be 'none', 'lru' or 'next_use'"),
    ("prefetch_depth: -1\n", "plan key prefetch_depth: Input should be greater than or equal to 0"),
    ("placement:\n  - {role: weight}\n", "plan key placement.0.tier: Field required"),
    ("placement:\n  - {tier: host.ddr, layer: 'x'}\n", "expected a layer number or range like '0-15'"),
    ("- 1\n", "a plan is a mapping of keys"),
])
def test_bad_plans_give_one_line_naming_the_file_and_key(tmp_path, text, expected):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(MemsimError, match=None) as error:
        load_plan(path)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_tier_that_does_not_exist_is_named():
    plan = load_plan({"placement": [{"role": "weight", "tier": "host.dram"}]})
    with pytest.raises(MemsimError, match="placement.0.tier: 'host.dram' names no tier"):
        home_tiers(TENSORS, plan, np.full(5, "gpu.hbm", dtype=object), TIERS)


def test_memsim_run_with_a_bad_plan_exits_2_with_one_line(run_cli, tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("placement:\n  - {role: weight, tier: host.dram}\n")
    proc = run_cli("run", "nvidia-h100-sxm", "llama-tiny", "--plan", path)
    assert proc.returncode == 2
    assert f"{path}: plan key placement.0.tier: 'host.dram' names no tier" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
