"""The trace file format (versioned, lazily loaded, clear errors) and the `memsim trace` and
`memsim workloads` commands, for registered workloads and a user's own model."""
import json
import textwrap
import warnings
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from memsim.cli import main
from memsim.errors import MemsimError
from memsim.trace import Trace, capture
from memsim.trace.table import FORMAT, VERSION
from memsim.trace.workload import StepSpec, trace_workload


@pytest.fixture(scope="module")
def tiny_trace():
    return trace_workload("llama-tiny", StepSpec(phase="decode", context=16))


def rewrite_member(path, name, data: bytes):
    """Copy of the archive at `path` with member `name` replaced (or removed when data is None)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    if data is None:
        del members[name]
    else:
        members[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)


def test_tables_are_read_when_first_used(tiny_trace, tmp_path):
    path = tiny_trace.save(tmp_path / "t.memtrace")
    rewrite_member(path, "accesses.parquet", b"not parquet at all")
    loaded = Trace.load(path)  # opening reads meta.json and the directory only
    assert loaded.meta["version"] == VERSION and loaded.meta["format"] == FORMAT
    assert loaded.ops.equals(tiny_trace.ops)
    with pytest.raises(MemsimError, match=r"t\.memtrace: corrupt or truncated trace file \(accesses\.parquet"):
        loaded.accesses


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "corrupt or truncated"),
    (lambda p: p.write_text("hello"), "corrupt or truncated"),
    (lambda p: rewrite_member(p, "ops.parquet", None), "missing ops.parquet"),
    (lambda p: rewrite_member(p, "meta.json", json.dumps({"format": FORMAT, "version": VERSION + 1}).encode()),
     f"version {VERSION + 1} is newer"),
    (lambda p: rewrite_member(p, "meta.json", json.dumps({"format": "other"}).encode()), "not a memsim trace"),
])
def test_damaged_files_give_one_line_naming_the_file(tiny_trace, tmp_path, damage, message):
    path = tiny_trace.save(tmp_path / "d.memtrace")
    damage(path)
    with pytest.raises(MemsimError, match=message) as error:
        Trace.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_required_column_is_named_and_added_columns_get_defaults(tiny_trace, tmp_path):
    path = tiny_trace.save(tmp_path / "c.memtrace")
    older = tiny_trace.ops.drop(columns=["measured_s", "stream"])  # as a file written before they existed
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(older, preserve_index=False), sink)
    rewrite_member(path, "ops.parquet", sink.getvalue().to_pybytes())
    ops = Trace.load(path).ops
    assert ops["measured_s"].isna().all() and (ops["stream"] == 0).all()
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(tiny_trace.tensors.drop(columns=["role"]), preserve_index=False), sink)
    rewrite_member(path, "tensors.parquet", sink.getvalue().to_pybytes())
    with pytest.raises(MemsimError, match="tensors.parquet lacks column.s. role"):
        Trace.load(path).tensors


def test_the_same_trace_makes_a_bit_identical_file(tiny_trace, tmp_path):
    again = trace_workload("llama-tiny", StepSpec(phase="decode", context=16))
    first, second = tiny_trace.save(tmp_path / "a.memtrace"), again.save(tmp_path / "b.memtrace")
    assert first.read_bytes() == second.read_bytes()
    third = Trace.load(first).save(tmp_path / "c.memtrace")  # loading and saving changes nothing
    assert third.read_bytes() == first.read_bytes()


def test_unpriced_ops_are_kept_with_their_bytes_and_named_once():
    x = torch.zeros(64, 64, device="meta")

    def step():
        a = torch.linalg.qr(x)  # no cost formula prices a QR factorisation
        b = torch.linalg.qr(x)
        return a, b

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trace = capture(step)
    messages = [str(w.message) for w in caught if "no cost formula" in str(w.message)]
    assert len(messages) == 1 and "aten::linalg_qr" in messages[0]
    other = trace.ops[trace.ops.category == "other"]
    assert len(other) == 2
    assert (other.bytes_read == 64 * 64 * 4).all()
    assert (other.bytes_written == 2 * 64 * 64 * 4).all()  # Q and R


def test_cli_trace_writes_a_file_that_run_replays(run_cli, tmp_path):
    out = tmp_path / "train.memtrace"
    proc = run_cli("trace", "llama-tiny", "--phase", "train", "--context", "8", "--mode", "real",
                   "--optimizer", "adam8bit:block=32", "--out", out, check=True)
    assert str(out) in proc.stdout and "optimizer_state" in proc.stdout
    trace = Trace.load(out)
    assert trace.meta["phase"] == "train" and trace.meta["optimizer"] == "adam8bit:block=32"
    assert (trace.ops.measured_s > 0).all()
    assert {"weight", "gradient", "optimizer_state"} <= set(trace.tensors.role)
    replay = run_cli("run", "nvidia-h100-sxm", out, "--json", check=True)
    assert json.loads(replay.stdout)["op_count"] == len(trace.ops)


def in_process(capsys, *args) -> tuple[int, str, str]:
    """`memsim ARGS` in this process (the subprocess runs above cover the real entry point)."""
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_lists_workloads_and_rejects_unknown_names(capsys):
    code, listing, _ = in_process(capsys, "workloads")
    assert code == 0 and "llama2-7b" in listing and "train" in listing
    assert "kv_block_size = None" in in_process(capsys, "workloads", "llama2-7b")[1]
    for args, message in ((("trace", "llama2-7", "--out", "x"), "did you mean llama2-7b"),
                          (("trace", "llama-tiny", "--config", "kv_head=2", "--out", "x"), "did you mean kv_heads"),
                          (("workloads", "lama-tiny"), "did you mean llama-tiny")):
        code, _, err = in_process(capsys, *args)
        assert code == 2 and message in err
        assert len(err.strip().splitlines()) == 1


def test_cli_traces_a_users_own_model(capsys, tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build_model():
            return nn.Sequential(nn.Embedding(1000, 64), nn.Linear(64, 32))

        def build_with_inputs():
            return nn.Linear(16, 8), (torch.ones(4, 16),)
    """))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "user.memtrace"
    assert in_process(capsys, "trace", "my_models:build_model", "--input", "2x10:int64", "--phase", "prefill",
                      "--out", out)[0] == 0
    trace = Trace.load(out)
    gemm = trace.ops[trace.ops.category == "gemm"].iloc[0]
    assert gemm.flops == 2 * 2 * 10 * 64 * 32
    assert trace.tensors[trace.tensors.role == "weight"].nbytes.sum() == (1000 * 64 + 64 * 32 + 32) * 4
    assert in_process(capsys, "trace", "my_models:build_with_inputs", "--phase", "train", "--out", out)[0] == 0
    roles = Trace.load(out).tensors.groupby("role").nbytes.sum()
    assert roles["gradient"] == (16 * 8 + 8) * 4 and roles["optimizer_state"] == 2 * (16 * 8 + 8) * 4
    code, _, err = in_process(capsys, "trace", "my_models:build_modle", "--out", out)
    assert code == 2 and "did you mean build_model" in err
    code, _, err = in_process(capsys, "trace", "my_models:build_model", "--out", out)
    assert code == 2 and "--input SHAPE" in err


def test_cli_names_unpriced_ops_in_one_warning_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "qr_model.py").write_text(textwrap.dedent("""
        import torch

        class QR(torch.nn.Module):
            def forward(self, x):
                return torch.linalg.qr(x)[0] + torch.linalg.qr(x)[1]

        def build():
            return QR()
    """))
    monkeypatch.chdir(tmp_path)
    code, out, err = in_process(capsys, "trace", "qr_model:build", "--input", "8x8", "--phase", "prefill",
                                "--out", tmp_path / "qr.memtrace")
    assert code == 0 and "3 ops" in out
    assert err.count("memsim: warning:") == 1 and "aten::linalg_qr" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
