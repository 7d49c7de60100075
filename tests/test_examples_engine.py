"""The issue-2 examples run, print their numbers, and those numbers match closed forms derived here."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["two_neuron", "chain_rule", "xor", "linear_regression", "nonlinear_regression"]


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_as_a_script(name):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py")], capture_output=True, text=True, check=False,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) >= 3


def test_two_neuron_forward_gradients_and_step_match_hand_derivation(capsys):
    w1, b1, w2, b2, x, y, lr = 2.0, 0.0, 3.0, 1.0, 1.0, 5.0, 0.01
    a1 = max(0.0, w1 * x + b1)            # 2
    a2 = max(0.0, w2 * a1 + b2)           # 7
    d2 = a2 - y                           # dJ/da2 = 2; both ReLUs active, so slopes are 1
    want = {"a1": a1, "a2": a2, "J": 0.5 * d2 ** 2, "dJ/dw2": d2 * a1, "dJ/db2": d2,
            "dJ/dw1": d2 * w2 * x, "dJ/db1": d2 * w2}
    assert (want["dJ/dw1"], want["dJ/db1"], want["dJ/dw2"], want["dJ/db2"]) == (6, 6, 4, 2)
    out = load("two_neuron").main(lr=lr)
    for k, v in want.items():
        assert out[k] == pytest.approx(v, rel=1e-12), k
    new = {"w1": w1 - lr * 6, "b1": b1 - lr * 6, "w2": w2 - lr * 4, "b2": b2 - lr * 2}
    for k, v in new.items():
        assert out[k] == pytest.approx(v, rel=1e-12), k
    a2_new = max(0.0, new["w2"] * max(0.0, new["w1"] * x + new["b1"]) + new["b2"])
    assert out["J_after"] == pytest.approx(0.5 * (a2_new - y) ** 2) and out["J_after"] < out["J"]
    printed = capsys.readouterr().out
    assert "dJ/dw2 = 4" in printed and "dJ/dw1 = 6" in printed


def test_chain_rule_autograd_matches_closed_forms():
    points = [-2.0, 0.5, 1.0, 3.0]
    out = load("chain_rule").main(points)
    for w in points:
        assert out[("J = w^2", w)] == pytest.approx(2 * w, rel=1e-12)
        assert out[("J = 1/w", w)] == pytest.approx(-1 / w ** 2, rel=1e-12)
        assert out[("J = 1/w^2", w)] == pytest.approx(-2 / w ** 3, rel=1e-12)
        assert out[("df/dg", w)] == pytest.approx(3 * (2 * w + 3) ** 2 + 5, rel=1e-12)
        assert out[("df/dx", w)] == pytest.approx(6 * (2 * w + 3) ** 2 + 10, rel=1e-12)
    assert out[("df/dx", 1.0)] == 160  # 6*25 + 10


def test_xor_predicts_all_four_points():
    out = load("xor").main()
    np.testing.assert_array_equal(out["predictions"], [0, 1, 1, 0])
    assert out["loss"] < 0.05


def test_linear_regression_recovers_the_line_and_the_least_squares_fit():
    out = load("linear_regression").main()
    assert out["w"] == pytest.approx(3.0, abs=0.05) and out["b"] == pytest.approx(2.0, abs=0.05)
    # the exact MSE minimiser of the same data, by the normal equations
    a = np.hstack([out["x"], np.ones_like(out["x"])]).astype(np.float64)
    w, b = np.linalg.solve(a.T @ a, a.T @ out["y"][:, 0].astype(np.float64))
    assert out["w"] == pytest.approx(w, abs=1e-3) and out["b"] == pytest.approx(b, abs=1e-3)
    assert out["mse"] == pytest.approx(np.mean((a @ [w, b] - out["y"][:, 0]) ** 2), rel=1e-3)


def test_nonlinear_regression_fits_sin_to_noise_level():
    out = load("nonlinear_regression").main()
    assert out["train_mse"] < 0.012  # noise variance is 0.01
    assert np.abs(out["fit"] - np.sin(out["grid"])).max() < 0.1
