"""Ranks that disagree are named, on every rank, before they can drift apart or hang: the check
itself (`check_same`) and DistributedDataParallel's use of it (model layout, requires_grad, options).
Run under mpiexec at 2-4 ranks (tests/run.sh); at one rank the mismatch tests have nothing to compare."""
import pytest

from distbp import nn
from distbp.distributed import DistributedDataParallel, SettingsMismatchError, check_same
from distbp.distributed.agreement import describe_difference


def test_describe_difference_names_the_first_differing_key_and_groups_the_ranks():
    everyone = [{"--lr": 0.1, "--seed": 0}, {"--lr": 0.1, "--seed": 0}, {"--lr": 0.2, "--seed": 0}]
    assert describe_difference(everyone) == "--lr differs: ranks 0, 1 have 0.1, rank 2 has 0.2"
    assert describe_difference([{"a": "x"}, {"a": "x", "b": 1}]) == "b differs: rank 0 has nothing, rank 1 has 1"
    assert describe_difference([{"a": 1}, {"a": 1}]) is None


@pytest.mark.mpi
def test_equal_settings_pass_and_a_differing_one_raises_on_every_rank(comm):
    check_same(comm, {"--lr": 0.1, "DISTBP_X": True})          # equal: no error, nothing else gathered
    if comm.size == 1:
        return
    last = comm.size - 1
    with pytest.raises(SettingsMismatchError) as e:
        check_same(comm, {"--lr": 0.1, "--seed": 7 if comm.rank == last else 0}, advice="give the same")
    others = "rank 0 has" if last == 1 else f"ranks {', '.join(map(str, range(last)))} have"
    assert str(e.value) == f"--seed differs: {others} 0, rank {last} has 7; give the same"
    comm.barrier()     # every rank raised, and none is left inside a collective


def _mlp():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


@pytest.mark.mpi(min_size=2)
def test_ddp_refuses_a_parameter_frozen_on_one_rank(comm):
    model = _mlp()
    if comm.rank == 1:
        model[0].weight.requires_grad = False
    with pytest.raises(ValueError, match=r"parameter 0\.weight differs: .*requires_grad=True.*"
                                         r"rank 1 has \(3, 4\) float\d+ requires_grad=False"):
        DistributedDataParallel(model, comm)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("option, values", [("bucket_cap_mb", (25, 1)), ("average", (True, False))])
def test_ddp_refuses_options_that_differ_across_ranks(comm, option, values):
    value = values[comm.rank == comm.size - 1]
    with pytest.raises(SettingsMismatchError, match=f"{option} differs: .* have {values[0]}, rank "
                                                    f"{comm.size - 1} has {values[1]}"
                       if comm.size > 2 else f"{option} differs: rank 0 has {values[0]}, rank 1 has {values[1]}"):
        DistributedDataParallel(_mlp(), comm, **{option: value})


@pytest.mark.mpi(min_size=2)
def test_ddp_refuses_models_of_different_shapes_naming_the_parameter(comm):
    model = nn.Sequential(nn.Linear(4, 5 if comm.rank == 0 else 3))
    with pytest.raises(ValueError, match=r"parameter 0\.weight differs: rank 0 has \(5, 4\)"):
        DistributedDataParallel(model, comm)


def test_lines_of_ranks_that_all_failed_are_printed_once_each():
    from distbp.distributed.comm.ending import _merge
    assert _merge(["distbp.train: error: x"] * 4) == ["distbp.train: error: x"]
    assert _merge(["a", "b", "a"]) == ["ranks 0, 2: a", "rank 1: b"]
