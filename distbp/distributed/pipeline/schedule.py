"""Pipeline schedules as data: each stage's ordered list of actions, a checker and a timeline.

A schedule is what one stage does in one training step, as a list of `Action(op, micro_batch)`:

    recv_forward m    receive micro-batch m's activation from stage - 1 (never on the first stage)
    forward m         run the stage's layers on micro-batch m
    send_forward m    send that output to stage + 1 (never on the last stage)
    recv_backward m   receive the gradient of micro-batch m's output from stage + 1 (never on the last)
    backward m        backpropagate micro-batch m through the stage, accumulating parameter gradients
    send_backward m   send the gradient of the stage's input to stage - 1 (never on the first)
    weight m          compute micro-batch m's deferred weight gradients (split schedules only)

A split schedule ("1f1b-split") has a `weight` action for every micro-batch: its `backward` then
computes input gradients only (what the previous stage waits for) and leaves the Linear layers'
weight gradients to `weight`; the runtime runs each run of consecutive `weight` actions as one
product per weight over all their micro-batches' rows (the first stage has two such runs).

Sends are nonblocking (the runtime completes them at the end of the step, or before it reuses
their buffer); receives block until the matching send was made. Messages match by neighbour,
direction and micro-batch (the tag), not by arrival order.

Keeping the schedule as data, separate from the runtime that executes it, is what lets
`check_schedules` prove a schedule correct for every stage at once, without MPI: a wrong order
shows up here as a named error instead of a hang on P ranks. The same simulation gives the
timeline `format_schedules` draws and the bubble fraction the docs quote.

    schedules = build_schedules("1f1b", num_stages=4, num_micro_batches=8)
    check_schedules(schedules)             # raises ScheduleError naming stage, action and micro-batch
    print(format_schedules(schedules))     # one line per stage: F0 F1 .. B0 ...

Interleaved 1F1B (virtual stages: each rank holds several model chunks) fits the same design:
`Action` gains a `chunk` field with default 0 (these schedules unchanged), a builder is added to
`_BUILDERS`, and `_peer` (the only place that says who talks to whom) maps a chunk's neighbours
to (stage +- 1 mod P, chunk or chunk +- 1).
"""
from __future__ import annotations

from dataclasses import dataclass

OPS = ("recv_forward", "forward", "send_forward", "recv_backward", "backward", "send_backward", "weight")
COMPUTE_OPS = ("forward", "backward", "weight")
RECV_OPS = ("recv_forward", "recv_backward")
SEND_OPS = ("send_forward", "send_backward")


class ScheduleError(ValueError):
    """A schedule that would compute wrongly or hang. `stage`, `index` (the action's position in
    that stage's list; the list's length for something missing at its end) and `micro_batch`
    locate the first problem found."""

    def __init__(self, message: str, stage: int, index: int, micro_batch: int | None):
        super().__init__(message)
        self.stage, self.index, self.micro_batch = stage, index, micro_batch


@dataclass(frozen=True)
class Action:
    """One step of a stage's schedule: `op` (one of OPS) applied to micro-batch `micro_batch`."""
    op: str
    micro_batch: int

    def __str__(self) -> str:
        return f"{self.op} {self.micro_batch}"


# ---------------------------------------------------------------------------------------------------
# Building schedules


def _check_int(name: str, value, low: int, high: int | None = None, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"Invalid {name}: {value!r}; it must be an integer {bound}{hint}")


def _forward_steps(stage: int, last: int, m: int) -> list[Action]:
    steps = [] if stage == 0 else [Action("recv_forward", m)]
    steps.append(Action("forward", m))
    if stage != last:
        steps.append(Action("send_forward", m))
    return steps


def _backward_steps(stage: int, last: int, m: int) -> list[Action]:
    steps = [] if stage == last else [Action("recv_backward", m)]
    steps.append(Action("backward", m))
    if stage != 0:
        steps.append(Action("send_backward", m))
    return steps


def _gpipe(num_stages: int, num_micro_batches: int, stage: int) -> list[Action]:
    """All forwards, then all backwards, both in micro-batch order 0..M-1 (torch.distributed.pipelining's
    ScheduleGPipe). Ascending backwards, rather than reverse, makes every stage accumulate the
    micro-batches' parameter gradients in the same order as 1F1B does, so the two schedules give
    bitwise-identical gradients; the timeline (and so the bubble) is the same either way."""
    last, schedule = num_stages - 1, []
    for m in range(num_micro_batches):
        schedule += _forward_steps(stage, last, m)
    for m in range(num_micro_batches):
        schedule += _backward_steps(stage, last, m)
    return schedule


def _one_f_one_b(num_stages: int, num_micro_batches: int, stage: int, slack: int = 0) -> list[Action]:
    """PipeDream-Flush (Megatron-LM's and torch's Schedule1F1B): min(P - stage - 1, M) warm-up
    forwards, then alternate one forward and one backward, then the remaining backwards. A stage
    then holds at most P - stage micro-batches' activations instead of GPipe's M, with the same
    bubble. `slack` more warm-up forwards on every stage but the last: see _one_f_one_b_slack."""
    last = num_stages - 1
    warmup = min(num_stages - stage - 1 + (slack if stage < last else 0), num_micro_batches)
    schedule = []
    for m in range(warmup):
        schedule += _forward_steps(stage, last, m)
    for i in range(num_micro_batches - warmup):
        schedule += _forward_steps(stage, last, warmup + i)
        schedule += _backward_steps(stage, last, i)
    for m in range(num_micro_batches - warmup, num_micro_batches):
        schedule += _backward_steps(stage, last, m)
    return schedule


def _one_f_one_b_split(num_stages: int, num_micro_batches: int, stage: int) -> list[Action]:
    """1F1B whose backwards compute input gradients only (the B of zero-bubble pipelining), with
    every micro-batch's weight gradients (W) after its B, where the runtime computes each weight's
    from the rows of a run of micro-batches in one product. The stages' dependencies run through B
    alone, so W leaves the critical path; the cost is memory: each Linear's input and output
    gradient of every micro-batch are held from its B to its W.

    Every stage but the first runs all its W at the end of the step. The first stage would idle in
    its cool-down, waiting for the last gradients, and no stage waits on its B: it runs the W of the
    micro-batches already backwarded in the first of those waits (ZB-H1's fill), and the rest at the
    end, so two products per weight instead of one."""
    schedule = _one_f_one_b(num_stages, num_micro_batches, stage)
    done = num_micro_batches - min(num_stages - 1, num_micro_batches)  # backwarded before the cool-down
    if stage != 0 or num_stages == 1 or done == 0:
        return schedule + [Action("weight", m) for m in range(num_micro_batches)]
    at = schedule.index(Action("recv_backward", done))
    return (schedule[:at] + [Action("weight", m) for m in range(done)] + schedule[at:]
            + [Action("weight", m) for m in range(done, num_micro_batches)])


def _one_f_one_b_slack(num_stages: int, num_micro_batches: int, stage: int) -> list[Action]:
    """1F1B with one more warm-up forward on every stage but the last, so each of them holds one
    more micro-batch (P - stage + 1). With equal times the timeline is 1F1B's; with times that vary
    from one action to the next (two ranks sharing cores and memory bandwidth) strict 1F1B makes
    each stage wait for every late action of its neighbour, while one micro-batch of slack lets a
    late action be absorbed: the next activation is already there when the next stage needs it,
    and the gradient a stage waits for was started one forward earlier."""
    return _one_f_one_b(num_stages, num_micro_batches, stage, slack=1)


_BUILDERS = {"gpipe": _gpipe, "1f1b": _one_f_one_b, "1f1b-slack": _one_f_one_b_slack,
             "1f1b-split": _one_f_one_b_split}
SCHEDULES = tuple(_BUILDERS)


def build_schedule(name: str, num_stages: int, num_micro_batches: int, stage: int) -> list[Action]:
    """The actions stage `stage` of `num_stages` runs for one step of `num_micro_batches` micro-batches."""
    if name not in _BUILDERS:
        raise ValueError(f"Unknown pipeline schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    _check_int("num_stages", num_stages, 1)
    _check_int("num_micro_batches", num_micro_batches, 1)
    _check_int("stage", stage, 0, num_stages - 1, f" (num_stages={num_stages})")
    return _BUILDERS[name](num_stages, num_micro_batches, stage)


def build_schedules(name: str, num_stages: int, num_micro_batches: int) -> list[list[Action]]:
    """Every stage's schedule, stage 0 first: what `check_schedules` and `format_schedules` take."""
    _check_int("num_stages", num_stages, 1)
    return [build_schedule(name, num_stages, num_micro_batches, s) for s in range(num_stages)]


# ---------------------------------------------------------------------------------------------------
# Checking: first each stage on its own (complete, no duplicates, local order), then all together


def _peer(stage: int, op: str) -> int:
    """The stage that the communication `op` on `stage` talks to."""
    return stage - 1 if op in ("recv_forward", "send_backward") else stage + 1


def _what(op: str, m: int) -> str:
    return {"recv_forward": f"receive micro-batch {m}'s activation",
            "forward": f"forward micro-batch {m}",
            "send_forward": f"send micro-batch {m}'s activation",
            "recv_backward": f"receive micro-batch {m}'s output gradient",
            "backward": f"backward micro-batch {m}",
            "send_backward": f"send micro-batch {m}'s input gradient",
            "weight": f"compute micro-batch {m}'s weight gradients"}[op]


def is_split(schedule) -> bool:
    """Whether a stage's list splits its backwards: it has `weight` actions."""
    return any(getattr(a, "op", None) == "weight" for a in schedule)


def _required_ops(stage: int, num_stages: int, split: bool = False) -> tuple[str, ...]:
    """The ops each micro-batch needs on `stage`, in an order they can run (`weight` needs only
    `backward` before it)."""
    first, last = stage == 0, stage == num_stages - 1
    return tuple(op for op in OPS
                 if not (first and op in ("recv_forward", "send_backward"))
                 and not (last and op in ("send_forward", "recv_backward"))
                 and (split or op != "weight"))


def _prerequisite(required: tuple, op: str) -> str | None:
    if op == "weight":
        return "backward"
    i = required.index(op)
    return required[i - 1] if i > 0 else None


def _check_stage(schedule, stage: int, num_stages: int, num_micro_batches: int) -> None:
    """One stage's list on its own: known actions, each needed action exactly once, in an order
    where every action's inputs exist. Errors name this stage and the offending action's index."""
    required = _required_ops(stage, num_stages, is_split(schedule))
    seen: dict[tuple[str, int], int] = {}
    for i, action in enumerate(schedule):
        where = f"stage {stage}, action {i}"
        if not isinstance(action, Action):
            raise ScheduleError(f"{where}: {action!r} is not an Action", stage, i, None)
        op, m = action.op, action.micro_batch
        if op not in OPS:
            raise ScheduleError(f"{where}: unknown op {op!r}; ops are {', '.join(OPS)}", stage, i, None)
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < num_micro_batches:
            raise ScheduleError(f"{where} ({op}): micro-batch {m!r} is not in [0, {num_micro_batches})",
                                stage, i, m if isinstance(m, int) else None)
        if op not in required:
            neighbour = "previous" if op in ("recv_forward", "send_backward") else "next"
            raise ScheduleError(f"{where} ({action}): stage {stage} has no {neighbour} stage, so it cannot "
                                f"{_what(op, m)}", stage, i, m)
        if (op, m) in seen:
            raise ScheduleError(f"{where} ({action}): a second {action}; the first is action {seen[op, m]}",
                                stage, i, m)
        before = _prerequisite(required, op)
        if before is not None and (before, m) not in seen:
            later = Action(before, m) in schedule[i + 1:]
            raise ScheduleError(f"{where} ({action}): it must {_what(before, m)} ({before} {m}) first"
                                + (", which it does later" if later else f", which stage {stage} never does"),
                                stage, i, m)
        seen[op, m] = i
    for m in range(num_micro_batches):
        for op in required:
            if (op, m) not in seen:
                raise ScheduleError(f"stage {stage}, end of schedule (action {len(schedule)}): it never does "
                                    f"{op} {m} ({_what(op, m)})", stage, len(schedule), m)


@dataclass(frozen=True)
class Span:
    """A compute action placed in simulated time: it runs over [start, end)."""
    op: str
    micro_batch: int
    start: float
    end: float
    index: int          # its position in the stage's action list


@dataclass(frozen=True)
class Timeline:
    """Every stage's compute spans, as `simulate_schedules` placed them."""
    stages: tuple[tuple[Span, ...], ...]
    forward_time: float
    backward_time: float
    weight_time: float = 1.0    # of a split schedule's `weight`; its `backward` takes the rest of backward_time

    @property
    def makespan(self) -> float:
        return max((s.end for spans in self.stages for s in spans), default=0.0)

    def busy_time(self, stage: int) -> float:
        return sum(s.end - s.start for s in self.stages[stage])

    def bubble_fraction(self) -> float:
        """The idle share of all stages' time from the step's start to its end: for GPipe and 1F1B
        with uniform stages, (P - 1) / (M + P - 1)."""
        total = len(self.stages) * self.makespan
        return 1.0 - sum(self.busy_time(s) for s in range(len(self.stages))) / total if total else 0.0


def simulate_schedules(schedules, forward_time: float = 1.0, backward_time: float = 2.0,
                       num_micro_batches: int | None = None, weight_time: float = 1.0) -> Timeline:
    """Check `schedules` (stage 0's list first) and run them in simulated time.

    Each stage has a clock; a compute action takes `forward_time` or `backward_time` (on a split
    schedule `backward` takes backward_time - weight_time and `weight` weight_time); a send is
    free and never blocks; a receive waits until the neighbour made the matching send (transfers
    are instantaneous). Any stage that can move does; when none can and some are not done, the
    blocked receives form a cycle: a deadlock, raised as a ScheduleError naming the first blocked
    stage, with every blocked stage's wait in the message. `num_micro_batches` defaults to one
    more than the largest micro-batch any action names."""
    schedules = [list(s) for s in schedules]
    num_stages = len(schedules)
    if num_stages == 0:
        raise ValueError("No schedules: give one list of actions per stage, stage 0 first")
    if num_micro_batches is None:
        ms = [a.micro_batch for s in schedules for a in s if isinstance(a, Action) and isinstance(a.micro_batch, int)]
        num_micro_batches = max(ms, default=0) + 1
    _check_int("num_micro_batches", num_micro_batches, 1)
    for stage, schedule in enumerate(schedules):
        _check_stage(schedule, stage, num_stages, num_micro_batches)
    if not 0 < weight_time < backward_time and any(is_split(s) for s in schedules):
        raise ValueError(f"weight_time {weight_time} must lie between 0 and backward_time {backward_time}: "
                         "a split backward is its input part plus its weight part")
    durations = [{"forward": forward_time, "backward": backward_time - weight_time, "weight": weight_time}
                 if is_split(s) else {"forward": forward_time, "backward": backward_time} for s in schedules]

    # every needed action is present exactly once on each stage, so every send has exactly one
    # matching receive on its neighbour and vice versa; what is left to find is a wait cycle
    clock = [0.0] * num_stages
    pc = [0] * num_stages
    sent: dict[tuple[int, int, str, int], float] = {}      # (from, to, direction, m) -> send time
    spans: list[list[Span]] = [[] for _ in range(num_stages)]
    progressed = True
    while progressed:
        progressed = False
        for s in range(num_stages):
            while pc[s] < len(schedules[s]):
                op, m = schedules[s][pc[s]].op, schedules[s][pc[s]].micro_batch
                direction = op.split("_")[1] if "_" in op else None
                if op in RECV_OPS:
                    key = (_peer(s, op), s, direction, m)
                    if key not in sent:
                        break
                    clock[s] = max(clock[s], sent[key])
                elif op in SEND_OPS:
                    sent[s, _peer(s, op), direction, m] = clock[s]
                else:
                    start = clock[s]
                    clock[s] += durations[s][op]
                    spans[s].append(Span(op, m, start, clock[s], pc[s]))
                pc[s] += 1
                progressed = True
    blocked = [s for s in range(num_stages) if pc[s] < len(schedules[s])]
    if blocked:
        waits = []
        for s in blocked:
            action = schedules[s][pc[s]]
            waits.append(f"stage {s} waits at action {pc[s]} ({action}) for stage {_peer(s, action.op)}")
        first = schedules[blocked[0]][pc[blocked[0]]]
        raise ScheduleError("deadlock: " + "; ".join(waits) + " (each send they wait for comes after a "
                            "receive that is blocked)", blocked[0], pc[blocked[0]], first.micro_batch)
    return Timeline(tuple(tuple(s) for s in spans), forward_time, backward_time, weight_time)


def check_schedules(schedules) -> None:
    """Raise ScheduleError if the stages' lists (stage 0 first) would compute wrongly or hang: each
    stage must forward and backward every micro-batch exactly once, receive before it computes,
    compute before it sends, have every send matched by exactly one receive on the right neighbour
    (same micro-batch and direction) and every receive by a send, and no cycle of blocked receives.
    The error names the stage, the action index and the micro-batch of the first problem."""
    simulate_schedules(schedules)


# ---------------------------------------------------------------------------------------------------
# Memory and drawing


def peak_in_flight(schedule) -> int:
    """The most micro-batches whose activations one stage holds at once (forwarded, not yet
    backwarded): GPipe's M, 1F1B's min(P - stage, M). Activation memory scales with it. On a split
    schedule a micro-batch is held until its `weight` (after its backward, only the Linear layers'
    inputs and output gradients): 1f1b-split's M."""
    held = peak = 0
    release = "weight" if is_split(schedule) else "backward"
    for action in schedule:
        held += {"forward": 1, release: -1}.get(action.op, 0)
        peak = max(peak, held)
    return peak


def format_schedules(schedules, forward_time: int = 1, backward_time: int = 2) -> str:
    """Each stage's simulated timeline, one line per stage, one column per time unit: `F3` a
    forward, `B3` and its dashes a backward, `W3` a split schedule's weight gradients (1 unit of
    the backward's), `.` idle. Checks the schedules first."""
    timeline = simulate_schedules(schedules, forward_time, backward_time)
    labels = [f"{s.op[0].upper()}{s.micro_batch}" for spans in timeline.stages for s in spans]
    width = max(len(label) for label in labels)
    units = round(timeline.makespan)
    name_width = len(f"stage {len(timeline.stages) - 1}")
    lines = []
    for stage, spans in enumerate(timeline.stages):
        cells = [".".ljust(width)] * units
        for span in spans:
            start, length = round(span.start), round(span.end - span.start)
            label = f"{span.op[0].upper()}{span.micro_batch}"
            # a span of several units fills their columns and the gaps between them with dashes
            drawn = label.ljust(width) if length == 1 else label.ljust(length * (width + 1) - 1, "-")
            cells[start:start + length] = [drawn] + [""] * (length - 1)
        lines.append(f"{f'stage {stage}':<{name_width}} | " + " ".join(c for c in cells if c).rstrip())
    split = any(s.op == "weight" for spans in timeline.stages for s in spans)
    backward = (f"B = input gradients ({backward_time - 1} unit{'s' if backward_time != 2 else ''}), "
                "W = weight gradients (1 unit)") if split else f"B = backward ({backward_time} units)"
    lines.append(f"{'':<{name_width}}   F = forward ({forward_time} unit), {backward}, "
                 f". = idle; bubble {timeline.bubble_fraction():.1%}")
    return "\n".join(lines)
