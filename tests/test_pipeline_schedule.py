"""Pipeline schedules (distbp.distributed.pipeline.schedule): GPipe and 1F1B built for every stage pass the
checker for P in 1..4 and M in 1..8, hand-broken ones are rejected naming the stage, action and micro-batch,
and the simulated timeline gives the textbook bubble (P - 1) / (M + P - 1) and activation memory."""
import dataclasses

import pytest

from distbp.distributed.pipeline.schedule import (
    SCHEDULES,
    Action,
    ScheduleError,
    build_schedule,
    build_schedules,
    check_schedules,
    format_schedules,
    peak_in_flight,
    simulate_schedules,
)

GRID = [(p, m) for p in range(1, 5) for m in range(1, 9)]


def _actions(text: str) -> list:
    """'F0 sf0 rb0 B0' -> Actions (short names keep the expected schedules readable)."""
    ops = {"rf": "recv_forward", "F": "forward", "sf": "send_forward", "rb": "recv_backward", "B": "backward",
           "sb": "send_backward", "W": "weight"}
    out = []
    for word in text.split():
        name = word.rstrip("0123456789")
        out.append(Action(ops[name], int(word[len(name):])))
    return out


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("num_stages,num_micro_batches", GRID)
def test_schedules_pass_the_checker_and_do_each_micro_batch_once(name, num_stages, num_micro_batches):
    schedules = build_schedules(name, num_stages, num_micro_batches)
    check_schedules(schedules)
    for stage, schedule in enumerate(schedules):
        for op in ("forward", "backward"):
            assert sorted(a.micro_batch for a in schedule if a.op == op) == list(range(num_micro_batches))
        ops = {a.op for a in schedule}
        assert ("recv_forward" in ops) == ("send_backward" in ops) == (stage > 0)
        assert ("send_forward" in ops) == ("recv_backward" in ops) == (stage < num_stages - 1)


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "1f1b-slack"])
@pytest.mark.parametrize("num_stages,num_micro_batches", GRID)
def test_bubble_fraction_is_the_textbook_one(name, num_stages, num_micro_batches):
    timeline = simulate_schedules(build_schedules(name, num_stages, num_micro_batches))
    p, m = num_stages, num_micro_batches
    assert timeline.makespan == 3 * (m + p - 1)  # unit forward, 2-unit backward
    assert timeline.bubble_fraction() == pytest.approx((p - 1) / (m + p - 1), abs=1e-12)


@pytest.mark.parametrize("num_stages,num_micro_batches", GRID)
def test_peak_activations_1f1b_min_p_m_gpipe_m(num_stages, num_micro_batches):
    for stage in range(num_stages):
        gpipe = build_schedule("gpipe", num_stages, num_micro_batches, stage)
        one_f_one_b = build_schedule("1f1b", num_stages, num_micro_batches, stage)
        assert peak_in_flight(gpipe) == num_micro_batches
        assert peak_in_flight(one_f_one_b) == min(num_stages - stage, num_micro_batches)
    assert peak_in_flight(build_schedule("1f1b", num_stages, num_micro_batches, 0)) == min(num_stages,
                                                                                           num_micro_batches)


def test_gpipe_order():
    # all forwards, then all backwards in micro-batch order (torch's ScheduleGPipe)
    assert build_schedule("gpipe", 3, 2, 0) == _actions("F0 sf0 F1 sf1 rb0 B0 rb1 B1")
    assert build_schedule("gpipe", 3, 2, 1) == _actions("rf0 F0 sf0 rf1 F1 sf1 rb0 B0 sb0 rb1 B1 sb1")
    assert build_schedule("gpipe", 3, 2, 2) == _actions("rf0 F0 rf1 F1 B0 sb0 B1 sb1")
    assert build_schedule("gpipe", 1, 2, 0) == _actions("F0 F1 B0 B1")


def test_1f1b_order():
    # warm-up min(P - s - 1, M) forwards, one forward one backward, cool-down backwards
    assert build_schedule("1f1b", 3, 4, 0) == _actions(
        "F0 sf0 F1 sf1 F2 sf2 rb0 B0 F3 sf3 rb1 B1 rb2 B2 rb3 B3")
    assert build_schedule("1f1b", 3, 4, 1) == _actions(
        "rf0 F0 sf0 rf1 F1 sf1 rb0 B0 sb0 rf2 F2 sf2 rb1 B1 sb1 rf3 F3 sf3 rb2 B2 sb2 rb3 B3 sb3")
    assert build_schedule("1f1b", 3, 4, 2) == _actions("rf0 F0 B0 sb0 rf1 F1 B1 sb1 rf2 F2 B2 sb2 rf3 F3 B3 sb3")
    # fewer micro-batches than stages: the warm-up is all of them
    assert build_schedule("1f1b", 4, 2, 0) == _actions("F0 sf0 F1 sf1 rb0 B0 rb1 B1")


@pytest.mark.parametrize("args,match", [
    (("pipedream", 2, 4, 0), "Unknown pipeline schedule 'pipedream'; choose one of gpipe, 1f1b"),
    (("gpipe", 0, 4, 0), "Invalid num_stages: 0"),
    (("gpipe", 2.0, 4, 0), "Invalid num_stages: 2.0"),
    (("1f1b", 2, 0, 0), "Invalid num_micro_batches: 0"),
    (("1f1b", 2, True, 0), "Invalid num_micro_batches: True"),
    (("1f1b", 2, 4, 2), r"Invalid stage: 2; it must be an integer in \[0, 1\] \(num_stages=2\)"),
    (("gpipe", 2, 4, -1), "Invalid stage: -1"),
])
def test_build_schedule_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        build_schedule(*args)


def _raises(schedules, stage, index, micro_batch, *fragments):
    with pytest.raises(ScheduleError) as info:
        check_schedules(schedules)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.stage, err.index, err.micro_batch) == (stage, index, micro_batch), str(err)
    for fragment in fragments:
        assert fragment in str(err)
    return err


def test_missing_send_names_the_sender():
    schedules = build_schedules("1f1b", 3, 4)
    schedules[1].remove(Action("send_forward", 2))
    # named at the first action that needs it: receiving the gradient of an output never sent
    i = schedules[1].index(Action("recv_backward", 2))
    _raises(schedules, 1, i, 2, "(send_forward 2) first, which stage 1 never does")


def test_missing_backward_send_on_the_last_stage():
    schedules = build_schedules("gpipe", 2, 3)
    schedules[1].remove(Action("send_backward", 0))
    _raises(schedules, 1, len(schedules[1]), 0, "never does send_backward 0")


def test_swapped_order_that_deadlocks():
    schedules = build_schedules("gpipe", 2, 2)
    # stage 0 waits for micro-batch 0's gradient before sending micro-batch 1's activation, which
    # stage 1 needs before it starts backward
    assert schedules[0][3:5] == _actions("sf1 rb0")
    schedules[0][3:5] = _actions("rb0 sf1")
    _raises(schedules, 0, 3, 0, "deadlock", "stage 0 waits at action 3 (recv_backward 0) for stage 1",
            "stage 1 waits at action 2 (recv_forward 1) for stage 0")


def test_deadlock_across_three_stages():
    # stage 2 (last) wants micro-batch 1 before it backwards 0; stage 0 wants gradient 0 before it sends 1
    schedules = [_actions("F0 sf0 rb0 F1 sf1 B0 rb1 B1"), build_schedule("gpipe", 3, 2, 1),
                 build_schedule("gpipe", 3, 2, 2)]
    err = _raises(schedules, 0, 2, 0, "deadlock")
    assert "stage 1 waits at action 3 (recv_forward 1)" in str(err)


def test_duplicated_backward():
    schedules = build_schedules("1f1b", 2, 3)
    i = schedules[1].index(Action("backward", 1))
    schedules[1].insert(i + 1, Action("backward", 1))
    _raises(schedules, 1, i + 1, 1, "a second backward 1; the first is action " + str(i))


def test_recv_from_the_wrong_direction():
    schedules = build_schedules("gpipe", 3, 2)
    i = schedules[1].index(Action("recv_forward", 1))
    schedules[1][i] = Action("recv_backward", 1)  # a gradient where the activation should come
    _raises(schedules, 1, i, 1, "must send micro-batch 1's activation (send_forward 1) first, which it does later")


def test_first_stage_cannot_receive_activations():
    schedules = build_schedules("1f1b", 2, 2)
    schedules[0].insert(0, Action("recv_forward", 0))
    _raises(schedules, 0, 0, 0, "stage 0 has no previous stage")


def test_last_stage_cannot_send_activations():
    schedules = build_schedules("1f1b", 2, 2)
    schedules[1].insert(2, Action("send_forward", 0))
    _raises(schedules, 1, 2, 0, "stage 1 has no next stage")


@pytest.mark.parametrize("stage,before,after,broken,micro_batch", [
    (1, "F0", "B0", "backward 0", 0),        # backward before forward
    (0, "F1", "sf1", "send_forward 1", 1),   # send before the output exists
    (1, "rf1", "F1", "forward 1", 1),        # compute before the input arrived
    (1, "B1", "sb1", "send_backward 1", 1),  # send a gradient not yet computed
])
def test_local_order(stage, before, after, broken, micro_batch):
    schedules = build_schedules("gpipe", 2, 2)
    a, b = _actions(before)[0], _actions(after)[0]
    i, j = schedules[stage].index(a), schedules[stage].index(b)
    schedules[stage][i], schedules[stage][j] = b, a
    _raises(schedules, stage, i, micro_batch, f"({broken}): it must", "which it does later")


def test_malformed_actions():
    with pytest.raises(ScheduleError, match=r"stage 0, action 1: unknown op 'fwd'"):
        check_schedules([[Action("forward", 0), Action("fwd", 0)]])
    with pytest.raises(ScheduleError, match=r"stage 0, action 0: \('forward', 0\) is not an Action"):
        check_schedules([[("forward", 0)]])
    with pytest.raises(ScheduleError, match=r"micro-batch -1 is not in \[0, 1\)"):
        check_schedules([[Action("forward", -1), Action("forward", 0), Action("backward", 0)]])
    with pytest.raises(ValueError, match="No schedules"):
        check_schedules([])
    with pytest.raises(dataclasses.FrozenInstanceError):
        Action("forward", 0).micro_batch = 1


def test_a_stage_missing_a_micro_batch_everywhere_else_present():
    schedules = build_schedules("1f1b", 2, 3)
    schedules[0] = [a for a in schedules[0] if a.micro_batch != 2]
    _raises(schedules, 0, len(schedules[0]), 2, "never does forward 2")


def test_timeline_spans():
    timeline = simulate_schedules(build_schedules("gpipe", 2, 2))
    as_tuples = [[(s.op[0].upper() + str(s.micro_batch), s.start, s.end) for s in spans] for spans in timeline.stages]
    assert as_tuples == [[("F0", 0, 1), ("F1", 1, 2), ("B0", 5, 7), ("B1", 7, 9)],
                         [("F0", 1, 2), ("F1", 2, 3), ("B0", 3, 5), ("B1", 5, 7)]]
    assert timeline.makespan == 9 and timeline.busy_time(0) == 6
    # other compute times: the same order, spans scaled
    assert simulate_schedules(build_schedules("gpipe", 2, 2), 1.0, 1.0).makespan == 6


def test_format_schedules():
    text = format_schedules(build_schedules("1f1b", 2, 3))
    assert text.splitlines() == [
        "stage 0 | F0 F1 .  .  B0--- F2 B1--- .  B2---",
        "stage 1 | .  F0 B0--- F1 B1--- F2 B2--- .  .",
        "          F = forward (1 unit), B = backward (2 units), . = idle; bubble 25.0%",
    ]
    # drawn from the real lists: a broken schedule is not drawn
    schedules = build_schedules("gpipe", 2, 2)
    schedules[0][3:5] = _actions("rb0 sf1")
    with pytest.raises(ScheduleError, match="deadlock"):
        format_schedules(schedules)


# ----- the split schedule: backward = input gradients (B), weight gradients (W) after -----

@pytest.mark.parametrize("num_stages,num_micro_batches", GRID)
def test_split_1f1b_is_1f1b_with_every_weight_and_holds_all_micro_batches(num_stages, num_micro_batches):
    p, m = num_stages, num_micro_batches
    for stage in range(p):
        split = build_schedule("1f1b-split", p, m, stage)
        assert [a for a in split if a.op != "weight"] == build_schedule("1f1b", p, m, stage)
        assert [a for a in split if a.op == "weight"] == [Action("weight", i) for i in range(m)]
        assert peak_in_flight(split) == m  # each micro-batch's Linear inputs wait for the weight actions
        done = m - (p - 1)   # micro-batches the first stage has backwarded when its cool-down starts
        if stage == 0 and p > 1 and done > 0:   # their W fills its first wait for a gradient
            at = split.index(Action("recv_backward", done))
            assert split[at - done:at] == [Action("weight", i) for i in range(done)]
            assert split[-(m - done):] == [Action("weight", i) for i in range(done, m)]
        else:
            assert split[-m:] == [Action("weight", i) for i in range(m)]


@pytest.mark.parametrize("num_stages,num_micro_batches", GRID)
def test_split_1f1b_timeline(num_stages, num_micro_batches):
    # F = B = W = 1: the 1F1B part takes 2(M + P - 1) on stage 0; with all its W after it, stage 0
    # would end last; the W it runs in its cool-down's first wait ends the step one unit sooner
    p, m = num_stages, num_micro_batches
    timeline = simulate_schedules(build_schedules("1f1b-split", p, m))
    filled = p > 1 and m >= p
    assert timeline.makespan == 2 * (m + p - 1) + m - filled
    assert timeline.bubble_fraction() == pytest.approx(1 - 3 * m / timeline.makespan, abs=1e-12)


def test_split_format():
    assert format_schedules(build_schedules("1f1b-split", 2, 2)).splitlines() == [
        "stage 0 | F0 F1 .  B0 W0 B1 W1",
        "stage 1 | .  F0 B0 F1 B1 W0 W1",
        ("          F = forward (1 unit), B = input gradients (1 unit), W = weight gradients (1 unit), "
         ". = idle; bubble 14.3%"),  # 1 - 3M / (2(M + P - 1) + M - 1)
    ]


def test_weight_before_its_backward_is_rejected():
    schedules = build_schedules("1f1b-split", 2, 3)
    schedules[1].remove(Action("weight", 1))
    i = schedules[1].index(Action("backward", 1))
    schedules[1].insert(i, Action("weight", 1))
    _raises(schedules, 1, i, 1, "it must backward micro-batch 1 (backward 1) first, which it does later")


def test_a_split_schedule_needs_every_weight():
    schedules = build_schedules("1f1b-split", 2, 3)
    schedules[0].remove(Action("weight", 2))
    _raises(schedules, 0, len(schedules[0]), 2, "never does weight 2")


def test_a_second_weight_is_rejected():
    schedules = build_schedules("1f1b-split", 2, 2)
    schedules[1].append(Action("weight", 0))
    _raises(schedules, 1, len(schedules[1]) - 1, 0, "a second weight 0")


def test_split_needs_a_weight_time_inside_the_backward():
    with pytest.raises(ValueError, match="weight_time 2"):
        simulate_schedules(build_schedules("1f1b-split", 2, 2), weight_time=2.0)


@pytest.mark.parametrize("num_stages,num_micro_batches", GRID)
def test_slack_1f1b_holds_one_more_micro_batch_before_the_last_stage(num_stages, num_micro_batches):
    p, m = num_stages, num_micro_batches
    for stage in range(p):
        slack = build_schedule("1f1b-slack", p, m, stage)
        assert peak_in_flight(slack) == min(p - stage + (stage < p - 1), m)
        # the same backwards in the same order as 1F1B: the gradients add up in the same order
        assert [a for a in slack if a.op == "backward"] == [a for a in build_schedule("1f1b", p, m, stage)
                                                            if a.op == "backward"]
