"""The hardware schema: shipped configs load, and every kind of bad input is one clear line."""

import pytest
import yaml

from memsim.errors import MemsimError
from memsim.hardware import load_system, shipped_configs

from conftest import HWCONFIGS


def test_every_shipped_config_validates():
    names = set(shipped_configs())
    assert {"nvidia-h100-sxm", "nvidia-a100-80gb-sxm", "nvidia-h200", "hbm-pim-gpu", "sambanova-sn40l",
            "apple-m1-max-laptop"} <= names
    for name in names:
        system = load_system(name)
        assert system.device.compute, name


def test_h100_figures_are_si_floats():
    system = load_system(HWCONFIGS / "nvidia-h100-sxm.yaml")
    hbm = system.devices["gpu"].memories["hbm"]
    assert hbm.read_bandwidth == pytest.approx(3.35e12)
    assert hbm.capacity == 80 * 2**30
    assert system.devices["gpu"].compute["sm"].matrix_flops["bf16"] == pytest.approx(989.4e12)
    assert system.links["pcie"].between == ("host.ddr", "gpu.hbm")


def test_other_hardware_kinds_are_expressible():
    pim = load_system("hbm-pim-gpu").device
    assert pim.compute["pim"].kind == "pim" and pim.compute["pim"].memory == "hbm"
    assert pim.memories["hbm"].internal_bandwidth > pim.memories["hbm"].read_bandwidth
    sn40l = load_system("sambanova-sn40l").device
    assert [tier.kind for tier in sn40l.memories.values()] == ["sram", "hbm", "ddr"]
    laptop = load_system("apple-m1-max-laptop").device
    assert laptop.memories["flash"].kind == "flash" and laptop.memories["flash"].queue_depth > 1


def _broken(tmp_path, edit, text=None):
    raw = yaml.safe_load((HWCONFIGS / "nvidia-h100-sxm.yaml").read_text())
    path = tmp_path / "broken.yaml"
    if text is not None:
        path.write_text(text)
        return path
    edit(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


def _hbm(raw):
    return raw["devices"]["gpu"]["memories"]["hbm"]


CASES = {
    "wrong unit": (lambda raw: _hbm(raw).update(bandwidth="3.35 TB"), None,
                   "devices.gpu.memories.hbm.bandwidth: '3.35 TB' is not a bandwidth (expected e.g. '3.35 TB/s')"),
    "missing key": (lambda raw: _hbm(raw).pop("capacity"), None,
                    "devices.gpu.memories.hbm.capacity: missing required key (e.g. '80 GiB')"),
    "unknown key": (lambda raw: _hbm(raw).update(bandwith=_hbm(raw).pop("bandwidth")), None,
                    "devices.gpu.memories.hbm.bandwith: unknown key (did you mean 'bandwidth'?)"),
    "negative capacity": (lambda raw: _hbm(raw).update(capacity="-80 GiB"), None,
                          "devices.gpu.memories.hbm.capacity: '-80 GiB' is negative"),
    "not yaml": (None, "devices: [gpu\n  hbm: {", "not valid YAML at line"),
    "not a mapping": (None, "- just\n- a list\n", "expected a mapping of keys at the top level"),
    "dangling link": (lambda raw: raw["links"]["pcie"].update(between=["host.ddr", "gpu.hmb"]), None,
                      "links.pcie.between: 'gpu.hmb' names nothing (did you mean 'gpu.hbm'?)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_one_line_and_exit_2(case, tmp_path, run_cli):
    edit, text, expected = CASES[case]
    path = _broken(tmp_path, edit, text)
    proc = run_cli("hw", "check", path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith(f"{path}: ")
    assert expected in lines[0]


def test_overrides_change_values_and_reject_unknown_keys():
    system = load_system("nvidia-h100-sxm", {"devices.gpu.memories.hbm.bandwidth": "4 TB/s"})
    assert system.device.memories["hbm"].read_bandwidth == pytest.approx(4e12)
    with pytest.raises(MemsimError, match="did you mean 'bandwidth'"):
        load_system("nvidia-h100-sxm", {"devices.gpu.memories.hbm.bandwidht": "4 TB/s"})


def test_hw_show_prints_tiers_units_and_links(run_cli):
    proc = run_cli("hw", "show", "nvidia-h100-sxm", check=True)
    for text in ("gpu.hbm", "host.nvme", "gpu.sm", "pcie", "3.35 TB/s"):
        assert text in proc.stdout
