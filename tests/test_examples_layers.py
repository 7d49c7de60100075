"""The layer examples run end to end and learn (short runs, well above the 10% chance level)."""
import importlib.util
import os

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,epochs,floor", [("cnn_digits", 2, 0.75), ("gru_sequence", 3, 0.75)])
def test_layer_example_learns_digits(name, epochs, floor, capsys):
    result = _load(name).main(epochs=epochs)
    assert result["test_accuracy"] > floor
    assert "test accuracy" in capsys.readouterr().out
