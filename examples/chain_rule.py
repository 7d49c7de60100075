"""The derivative and chain-rule examples of seed 000, computed by distbp's autograd beside the closed form.

    python examples/chain_rule.py

    J = w^2    -> dJ/dw = 2w
    J = 1/w    -> dJ/dw = -1/w^2
    J = 1/w^2  -> dJ/dw = -2/w^3
    f = h(g(x)), g = 2x + 3, h(y) = y^3 + 5y  ->  df/dx = h'(g) g' = (3(2x+3)^2 + 5) * 2 = 6(2x+3)^2 + 10
(the seed gets these right; it prints sympy's symbolic answers, here autograd evaluates them at points)
"""
import numpy as np

import distbp as db

POINTS = [-2.0, 0.5, 1.0, 3.0]

DERIVATIVES = [  # (label, J(w) on tensors, closed-form dJ/dw on floats)
    ("J = w^2", lambda w: w ** 2, lambda w: 2 * w),
    ("J = 1/w", lambda w: 1 / w, lambda w: -1 / w ** 2),
    ("J = 1/w^2", lambda w: 1 / w ** 2, lambda w: -2 / w ** 3),
]


def grad_at(fn, v: float) -> float:
    w = db.tensor(v, requires_grad=True, dtype=np.float64)
    fn(w).backward()
    return float(w.grad)


def main(points=POINTS) -> dict:
    out = {}
    for label, fn, closed in DERIVATIVES:
        for v in points:
            got = grad_at(fn, v)
            out[(label, v)] = got
            print(f"{label:10s} w = {v:5g}:  autograd dJ/dw = {got:12.6g}   closed form = {closed(v):12.6g}")
    for v in points:
        x = db.tensor(v, requires_grad=True, dtype=np.float64)
        g = 2 * x + 3
        g.retain_grad()  # keep the intermediate df/dg, which backward otherwise frees
        f = g ** 3 + 5 * g
        f.backward()
        out[("df/dg", v)], out[("df/dx", v)] = float(g.grad), float(x.grad)
        print(f"f = h(g(x)) x = {v:5g}:  autograd df/dg = {float(g.grad):8g} (3g^2+5 = {3 * (2 * v + 3) ** 2 + 5:8g})"
              f"   df/dx = {float(x.grad):8g} (6(2x+3)^2+10 = {6 * (2 * v + 3) ** 2 + 10:8g})")
    return out


if __name__ == "__main__":
    main()
