"""``workbench.sweepfile``: the shipped-sweep reader and writer that the data lab and the memory lab share, each
through its own entry points and its own ``ShippedSweepError``."""
import json

import pytest

from workbench.datalab.recipes import ShippedSweepError as DataSweepError
from workbench.datalab.recipes import read_sweep_file, write_sweep_file
from workbench.memory.errors import ShippedSweepError as MemorySweepError
from workbench.memory.sweepfile import read_sweep, write_sweep
from workbench.sweepfile import read_sweep_doc, write_sweep_doc


def test_round_trip_and_document_shape(tmp_path):
    p = tmp_path / "s.json"
    write_sweep_doc(p, "workbench.demo", 3, "python -m demo x", {"cfg": {"a": 1}}, [{"loss": 2.0}])
    doc = json.loads(p.read_text())
    assert doc == {"format": "workbench.demo", "version": 3, "command": "python -m demo x",
                   "settings": {"cfg": {"a": 1}}, "runs": [{"loss": 2.0}]}
    assert read_sweep_doc(p, "workbench.demo", 3, "cmd", ("loss",), ("cfg",)) == doc
    assert list(tmp_path.iterdir()) == [p]  # the atomic write leaves no temporary file behind


@pytest.mark.parametrize("content, message", [
    (None, "no shipped sweep at"),
    ("{not json", "is not a readable JSON sweep file"),
    ('{"format": "other", "version": 1}', r"holds \('other', 1\), expected format 'workbench.demo' version 1"),
    ('{"format": "workbench.demo", "version": 1, "runs": [], "settings": {}}', "has no runs or no settings"),
    ('{"format": "workbench.demo", "version": 1, "runs": [{"loss": 1}], "settings": {}}', r"settings lack \['cfg'\]"),
    ('{"format": "workbench.demo", "version": 1, "runs": [{"x": 1}], "settings": {"cfg": 1}}',
     r"run 0 lacks \['loss'\]"),
])
def test_each_fault_is_named_with_the_remake_command(tmp_path, content, message):
    p = tmp_path / "s.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(KeyError, match=f"{message}.*remake it with: python -m demo"):
        read_sweep_doc(p, "workbench.demo", 1, "python -m demo", ("loss",), ("cfg",), error=KeyError)


def test_each_lab_keeps_its_format_command_and_error(tmp_path):
    mem, data = tmp_path / "mem.json", tmp_path / "data.json"
    write_sweep(mem, "recall", {"cfg": {}}, [{"acc": 0.5}])
    write_sweep_file(data, "traps", {"a": 1}, [{"copies": 0}], "python -m workbench.datalab.make_sweeps traps")
    assert read_sweep(mem, "recall", ("acc",))["format"] == "workbench.memory.recall"
    assert read_sweep_file(data, "traps", ("copies",))["format"] == "workbench.datalab.traps"
    with pytest.raises(MemorySweepError, match="make_sweeps icl"):  # read as another experiment: wrong format
        read_sweep(mem, "icl", ())
    with pytest.raises(DataSweepError, match="workbench.datalab.make_sweeps mixing"):
        read_sweep_file(data, "mixing", ())
    write_sweep(mem, "recall", {"no_cfg": 1}, [{"acc": 0.5}])  # the memory lab needs settings['cfg']
    with pytest.raises(MemorySweepError, match=r"settings lack \['cfg'\]"):
        read_sweep(mem, "recall", ("acc",))
    assert not issubclass(MemorySweepError, DataSweepError) and not issubclass(DataSweepError, MemorySweepError)
