"""The two-neuron network of seed 000, forward and backward with distbp's autograd, then one SGD step.

    python examples/two_neuron.py

Network: x -> a1 = relu(w1*x + b1) -> a2 = relu(w2*a1 + b2),  J = 1/2 (a2 - y)^2,
with w1=2, b1=0, w2=3, b2=1, x=1, y=5.  By hand (both ReLUs are active, slope 1):
    a1 = relu(2) = 2,  a2 = relu(7) = 7,  J = 1/2 (7-5)^2 = 2
    dJ/da2 = a2 - y = 2
    dJ/dw2 = 2 * a1 = 4      dJ/db2 = 2
    dJ/dw1 = 2 * w2 * x = 6  dJ/db1 = 2 * w2 = 6
    one step with lr a:  w1 = 2 - 6a,  b1 = -6a,  w2 = 3 - 4a,  b2 = 1 - 2a

Where the seed is wrong: it gives dJ/dw2 = (7-5)*7 = 14, multiplying by the output a2 = 7 instead of
the neuron's input a1 = 2, and so updates w2 = 3 - 14a instead of 3 - 4a. (Smaller slips: its b1
update is written with dJ/db[2] where dJ/db[1] is meant; its cost J = 1/(2m) sum(f - y) lacks the
square; and dJ/dw1 = (a2-y)*w2*x holds only because both ReLUs are in their linear part.)
"""
import distbp as db

LR = 0.01  # small enough that the step lowers J (at 0.1 it overshoots: J goes 2 -> 2.25)


def main(lr: float = LR) -> dict:
    x, y = 1.0, 5.0
    w1, b1, w2, b2 = (db.tensor(v, requires_grad=True, dtype="float64") for v in (2.0, 0.0, 3.0, 1.0))
    a1 = db.relu(w1 * x + b1)
    a2 = db.relu(w2 * a1 + b2)
    loss = 0.5 * (a2 - y) ** 2
    loss.backward()
    out = {"a1": a1.item(), "a2": a2.item(), "J": loss.item(),
           "dJ/dw1": float(w1.grad), "dJ/db1": float(b1.grad), "dJ/dw2": float(w2.grad), "dJ/db2": float(b2.grad)}
    print("forward:   a1 = relu(w1*x + b1) = {a1:g}   a2 = relu(w2*a1 + b2) = {a2:g}   J = {J:g}".format(**out))
    print("gradients: dJ/dw1 = {dJ/dw1:g}   dJ/db1 = {dJ/db1:g}   dJ/dw2 = {dJ/dw2:g}   dJ/db2 = {dJ/db2:g}"
          .format(**out))
    opt = db.optim.SGD([w1, b1, w2, b2], lr=lr)
    opt.step()
    for name, t in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        out[name] = t.item()
    print(f"after one SGD step (lr={lr}): w1 = {out['w1']:g}   b1 = {out['b1']:g}   "
          f"w2 = {out['w2']:g}   b2 = {out['b2']:g}")
    a2_new = db.relu(w2 * db.relu(w1 * x + b1) + b2).item()
    out["J_after"] = 0.5 * (a2_new - y) ** 2
    print(f"loss after the step: J = {out['J_after']:g} (was {out['J']:g})")
    return out


if __name__ == "__main__":
    main()
