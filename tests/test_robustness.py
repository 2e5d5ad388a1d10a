"""Issue 10, library level: seeds, bad data, numerics, time limits, part files, not-measured
records in the schema, the verdicts and the report."""

import json
import math
import signal
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from ntkcheck.arch import ArchSpec
from ntkcheck.claim import Claim, record_schema
from ntkcheck.data import (
    DataError,
    Dataset,
    check_arch_input,
    check_data,
    check_loss_targets,
    load_dataset,
)
from ntkcheck.kernels import KernelMemoryError, empirical_ntk
from ntkcheck.kernels._memory import check_memory
from ntkcheck.numerics import (
    IllConditionedWarning,
    KernelNotPSDError,
    NumericalOverflowError,
    check_conditioning,
    check_psd,
    condition_number,
    kernel_solve,
    with_float64_fallback,
)
from ntkcheck.plugin.runtime import (
    Deadline,
    PartFile,
    SweepStopped,
    is_out_of_memory,
    parse_timeout,
    read_part_files,
    sigterm_as_interrupt,
)
from ntkcheck.report import build_html
from ntkcheck.seeding import derive_seed, seed_everything
from ntkcheck.verdict import compute_verdicts

# ----------------------------------------------------------------------------- 1. seeds


def test_derived_seed_is_a_stable_hash_of_the_unit():
    # sha256, not Python's salted hash(): this value is the same in every process and release
    assert derive_seed("ntk-at-init", "mlp-d2-relu-ntk-b", 64, 0) == 2501143306333050757
    base = ("c", "mlp-d1-relu-ntk-b", 64, 0)
    variants = [("d", *base[1:]), (base[0], "mlp-d2-relu-ntk-b", *base[2:]),
                (*base[:2], 128, 0), (*base[:3], 1)]
    seeds = {derive_seed(*base)} | {derive_seed(*v) for v in variants}
    assert len(seeds) == 5 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("args", [("", "a", 8, 0), ("c", "a", 0, 0), ("c", "a", 8, -1),
                                  ("c", "a", 8.0, 0), ("c", "a", True, 0)])
def test_derived_seed_rejects_bad_units(args):
    with pytest.raises(ValueError, match="must be"):
        derive_seed(*args)


def test_seed_everything_makes_global_draws_repeat():
    seed_everything(derive_seed("c", "a", 8, 0))
    first = (torch.randn(3), np.random.rand(3))  # noqa: NPY002
    torch.randn(5)  # anything drawn in between does not matter after re-seeding
    seed_everything(derive_seed("c", "a", 8, 0))
    again = (torch.randn(3), np.random.rand(3))  # noqa: NPY002
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])


# ----------------------------------------------------------------------------- 2. bad data

_X = np.ones((3, 2))


@pytest.mark.parametrize(("x", "y", "task", "message"), [
    (np.array([[np.nan, 1.0]] * 3), np.arange(3), "classification", "NaN or Inf) in the inputs"),
    (_X, np.array([0.0, np.inf, 1.0]), "regression", "NaN or Inf) in the targets"),
    (np.ones((0, 2)), np.ones(0), "regression", "is empty"),
    (_X, np.ones(2), "regression", "3 inputs but 2 targets"),
    (np.ones((3, 2), dtype=np.int64), np.ones(3), "regression", "convert them to float"),
    (np.ones((3, 2), dtype=bool), np.ones(3), "regression", "convert them to float"),
    (_X.astype(np.complex128), np.ones(3), "regression", "convert them to float"),
    (np.float64(1.0), np.ones(3), "regression", "batch) dimension"),
    (_X, np.array(["a", "b", "c"]), "regression", "pass numbers"),
    (_X, np.array([0.5, 1.0, 0.0]), "classification", "integer class labels"),
    (_X, np.eye(3, dtype=np.int64), "classification", "y.argmax(1)"),
    (_X, np.array([0, -1, 1]), "classification", "0..C-1"),
    (_X, np.ones((3, 1, 1)), "regression", "pass (N,) or (N, K)"),
    (_X, np.ones(3), "clustering", "task must be"),
])
def test_bad_data_names_the_set_the_problem_and_the_fix(x, y, task, message):
    with pytest.raises(DataError, match="'mine'") as err:
        check_data("mine", x, y, task)
    assert message in str(err.value)


def test_user_npz_with_nan_is_refused_at_load(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 3))
    x[4, 1] = np.nan
    np.savez(tmp_path / "sensors.npz", x=x, y=np.arange(10) % 2)
    with pytest.raises(DataError, match=r"'.*sensors.npz': 1 non-finite value\(s\)"):
        load_dataset(str(tmp_path / "sensors.npz"))


def test_datasets_are_checked_when_built_directly():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(DataError, match="'toy'.*NaN"):
        Dataset("toy", x.clone().fill_(math.nan), torch.zeros(4, dtype=torch.int64),
                "classification", (1, 8, 8), 2)
    with pytest.raises(DataError, match=r"input_shape is \(64,\)"):
        Dataset("toy", x, torch.zeros(4, dtype=torch.int64), "classification", (64,), 2)
    with pytest.raises(DataError, match="out of range for n_classes=2"):
        Dataset("toy", x, torch.tensor([0, 1, 2, 0]), "classification", (1, 8, 8), 2)
    with pytest.raises(DataError, match="'toy': inputs have dtype int64"):
        Dataset("toy", x.long(), torch.zeros(4), "regression", (1, 8, 8), 0)


def test_targets_must_match_the_loss():
    d = load_dataset("diabetes", n=8)
    check_loss_targets(d.name, d.regression_targets(), 1, "mse")
    with pytest.raises(DataError, match=r"shape \(8,\).*would broadcast"):
        check_loss_targets(d.name, d.y, 1, "mse")
    digits = load_dataset("digits", n=8)
    with pytest.raises(DataError, match="float targets, got torch.int64"):
        check_loss_targets(digits.name, digits.y, 1, "mse")
    check_loss_targets(digits.name, digits.y, 10, "cross_entropy")
    with pytest.raises(DataError, match=r"labels must lie in 0..4"):
        check_loss_targets(digits.name, torch.tensor([0, 7]), 5, "cross_entropy")
    with pytest.raises(DataError, match="integer labels"):
        check_loss_targets(digits.name, digits.one_hot(), 10, "cross_entropy")


def test_family_and_input_shape_must_match():
    wine = load_dataset("wine", n=8)
    cnn = ArchSpec(family="cnn", depth=2)
    with pytest.raises(DataError, match=r"'wine' has inputs of shape \(13,\).*'digits'"):
        wine.check_arch(cnn)
    with pytest.raises(ValueError, match=r"takes images: input_shape must be \(C, H, W\)"):
        cnn.with_width(4).build(seed=0, input_shape=wine.input_shape)  # and at build time
    with pytest.raises(DataError, match="pools 4 times and needs at least 16x16"):
        check_arch_input("digits", (1, 8, 8), ArchSpec(family="cnn", depth=4, pool=True))
    check_arch_input("wine", (13,), ArchSpec())  # an MLP takes any shape


# ----------------------------------------------------------------------------- 3. bad specs


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"activation": "swish"}, "unknown activation 'swish'"),
    ({"parametrization": "ntp"}, "unknown parametrization 'ntp'"),
    ({"width": 0}, "width must be an integer >= 1, got 0"),
    ({"width": -8}, "width must be an integer >= 1, got -8"),
])
def test_bad_specs_are_refused_with_the_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArchSpec(**kwargs)
    if "width" in kwargs:
        with pytest.raises(ValueError, match=message):
            ArchSpec().with_width(kwargs["width"])


# ----------------------------------------------------------------------------- 4. memory


def test_memory_errors_are_recognized():
    with pytest.raises(KernelMemoryError) as estimate:
        check_memory(1e18, "cpu", "a huge Jacobian")
    assert "needs an estimated" in str(estimate.value) and "batch_size" in str(estimate.value)
    assert is_out_of_memory(estimate.value)
    try:  # a real failed allocation of the CPU allocator (2**49 bytes)
        torch.empty(2**46, dtype=torch.float64)
    except RuntimeError as exc:
        assert is_out_of_memory(exc)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only MemoryError/RuntimeError


# ----------------------------------------------------------------------------- 5. time limits


@pytest.mark.parametrize(("text", "seconds"), [(None, None), ("", None), ("0", None),
                                               ("none", None), ("2.5", 2.5), ("600", 600.0)])
def test_parse_timeout(text, seconds):
    assert parse_timeout(text) == seconds


@pytest.mark.parametrize("text", ["abc", "-1", "inf", "nan"])
def test_parse_timeout_rejects(text):
    with pytest.raises(ValueError, match="--ntk-timeout"):
        parse_timeout(text)


def test_deadline_checks_and_disarms():
    now = [0.0]
    deadline = Deadline(10.0, clock=lambda: now[0])
    deadline.check()
    now[0] = 10.5
    with pytest.raises(SweepStopped, match=r"stopped after 10.5 s \(--ntk-timeout 10\)"):
        deadline.check()
    assert deadline.hit
    deadline.disarm()
    deadline.check()  # the sweep is over: no more stops
    Deadline(None, clock=lambda: 1e9).check()  # no limit never expires


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="POSIX only")
def test_alarm_stops_a_unit_in_the_middle_but_not_a_critical_section():
    deadline = Deadline(0.2)
    started = time.monotonic()
    with pytest.raises(SweepStopped), deadline.alarm():
        time.sleep(30)  # a unit that would run far past the limit
    assert time.monotonic() - started < 5
    deadline = Deadline(0.1)
    done = []
    with pytest.raises(SweepStopped), deadline.alarm():
        with deadline.critical():  # e.g. writing a record: finished before the stop
            time.sleep(0.4)
            done.append(1)
        done.append(2)
    assert done == [1]
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.default_int_handler)


def test_sigterm_becomes_a_keyboard_interrupt_once():
    import os

    outer = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (this very run may handle it)
    try:
        with sigterm_as_interrupt() as installed:
            assert installed
            with pytest.raises(KeyboardInterrupt, match="received signal SIGTERM"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler runs as soon as the signal arrives
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # a second one kills
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with sigterm_as_interrupt() as installed:  # someone else's choice is left alone
            assert not installed and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, outer)


# ----------------------------------------------------------------------------- 6. part files


def test_part_files_survive_a_torn_last_line(tmp_path):
    part = PartFile(tmp_path / "run" / "records.gw0.123.jsonl")
    part.write({"record": {"width": 8, "value": 0.5}})
    part.write({"record": {"width": 16, "value": None}})
    # a process killed while writing leaves half a line behind
    with open(part.path, "a", encoding="utf-8") as fh:
        fh.write('{"record": {"width": 3')
    (tmp_path / "run" / "records.jsonl").write_text('{"not": "a part file"}\n')
    rows = read_part_files(tmp_path / "run")
    assert [r["record"]["width"] for r in rows] == [8, 16]
    part.close()


# ----------------------------------------------------------------------------- 7. numerics


def _ntk(spec: ArchSpec, n: int = 12) -> torch.Tensor:
    d = load_dataset("digits", n=n)
    return empirical_ntk(spec.with_width(32).build(seed=0, input_shape=d.input_shape), d.x)


def test_psd_check_accepts_real_kernels_and_round_off():
    k = _ntk(ArchSpec(depth=2))
    assert check_psd(k, "empirical NTK") is k
    eig, vec = torch.linalg.eigh(k)
    eig[0] = -1e-14 * eig[-1]  # round-off size
    check_psd(vec @ torch.diag(eig) @ vec.T)


def test_psd_check_names_the_likely_cause():
    x = load_dataset("digits", n=8).x.reshape(8, -1)
    # a "kernel" of two different functions (dropout active: another mask per forward pass)
    torch.manual_seed(0)
    drop = torch.nn.Dropout(0.5).train()
    j1, j2 = drop(x), drop(x)
    with pytest.raises(KernelNotPSDError, match="not symmetric.*non-deterministic forward"):
        check_psd(j1 @ j2.T, "dropout kernel")
    bad = torch.diag(torch.tensor([1.0, 0.5, -0.01], dtype=torch.float64))
    with pytest.raises(KernelNotPSDError,
                       match=r"smallest eigenvalue -0.01 < .*samples interact"):
        check_psd(bad)
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_psd(torch.tensor([[math.nan]]))


def test_ill_conditioned_gram_warns_with_the_number():
    x = load_dataset("digits", n=6).x.reshape(6, -1)
    x32 = torch.cat([x, x[:1] + 1e-4]).float()  # two nearly equal inputs
    gram = x32 @ x32.T / x32.shape[1]
    with pytest.warns(IllConditionedWarning, match=r"condition number is [0-9.e+]+, so a "
                      r"solve in float32"):
        cond = check_conditioning(gram, "linear Gram")
    assert cond > 1e5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert condition_number(torch.eye(3)) == 1.0
        check_conditioning(torch.eye(3))
        sol = kernel_solve(torch.eye(3, dtype=torch.float64) * 2, torch.ones(3))
    assert torch.allclose(sol, torch.full((3,), 0.5, dtype=torch.float64))
    singular = torch.ones(2, 2, dtype=torch.float64)
    with pytest.warns(IllConditionedWarning, match="singular"), \
            pytest.raises(NumericalOverflowError, match="add a ridge"):
        kernel_solve(singular, torch.ones(2))


def test_float32_overflow_falls_back_to_float64_or_is_refused():
    def square(dtype):
        return torch.tensor(1e30, dtype=dtype) ** 2  # 1e60 overflows float32

    with pytest.warns(RuntimeWarning, match="overflowed in float32; computed it in float64"):
        out = with_float64_fallback(square, torch.float32, "a kernel")
    assert out.dtype == torch.float64 and float(out) == pytest.approx(1e60)

    def huge(dtype):
        return torch.tensor(1e300, dtype=dtype) ** 2

    with pytest.raises(NumericalOverflowError, match="not finite even in float64"):
        with_float64_fallback(huge, torch.float64, "a kernel")


# ----------------------------------------------------------------------------- records

_BASE = dict(run_id="r", claim_id="c", arch_id="mlp-d1-relu-ntk-b", seed=0, profile="smoke",
             device="cpu", dtype="float64", elapsed_s=0.1, nodeid="t.py::t")
_CLAIM = Claim(id="c", statement="s", source="t", metric="m", tolerance=0.2)


def _frame() -> pd.DataFrame:
    rows = [{**_BASE, "width": w, "seed": s, "value": 1 / w ** 0.5, "status": "measured"}
            for w in (16, 64) for s in (0, 1)]
    rows += [{**_BASE, "width": 256, "seed": s, "value": None, "status": "oom",
              "reason": "KernelMemoryError: needs an estimated 80 GiB"} for s in (0, 1)]
    return pd.DataFrame(rows)


def test_not_measured_records_pass_the_schema_and_stay_out_of_verdicts():
    records = record_schema(["c"]).validate(_frame())
    per_width, per_arch = compute_verdicts(records, {"c": _CLAIM})
    assert list(per_width["width"]) == [16, 64]
    assert per_arch.loc[0, "widest_width"] == 64
    bad = _frame()
    bad.loc[0, "value"] = math.nan  # a measured record must still be finite
    with pytest.raises(Exception, match="finite"):
        record_schema(["c"]).validate(bad)
    legacy = _frame().drop(columns=["status"]).iloc[:4]  # records before the status column
    assert len(record_schema(["c"]).validate(legacy)) == 4


def test_report_shows_not_measured_cells():
    records = _frame()
    per_width, per_arch = compute_verdicts(records, {"c": _CLAIM})
    html = build_html(records, per_width, per_arch, {"c": _CLAIM.to_dict()},
                      {"run_id": "r", "interrupted": True})
    assert ">not measured: out of memory<" in html
    assert 'id="interrupted"' in html
    assert json.dumps("oom") in html  # the status travels in the embedded records


def test_empirical_ntk_refuses_a_module_that_mixes_samples():
    # h - h.mean(0): the three implementations returned three different PSD kernels.
    from ntkcheck.kernels.empirical import SampleMixingError

    class Center(torch.nn.Module):
        def forward(self, h):
            return h - h.mean(0)

    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64)
    body = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh())
    net = torch.nn.Sequential(body, Center(), torch.nn.Linear(5, 1)).double()
    for implementation in ("jacobian", "ntvp", "structured"):
        with pytest.raises(SampleMixingError, match=r"'1' \(Center\).*h - h\.mean\(0\)"):
            empirical_ntk(net, x, implementation=implementation)
    plain = torch.nn.Sequential(body, torch.nn.Linear(5, 1)).double()
    k = {i: empirical_ntk(plain, x, implementation=i) for i in ("jacobian", "ntvp")}
    torch.testing.assert_close(k["jacobian"], k["ntvp"])


def test_float32_empirical_ntk_overflow_warns_and_is_recomputed_in_float64():
    # x.x' = 3e40 > 3.4e38: main returned inf without a word.
    net = torch.nn.Linear(3, 1).float()
    x = torch.full((2, 3), 1e20)
    with pytest.warns(RuntimeWarning, match="the empirical NTK overflowed in float32; "
                      "computed it in float64"):
        k = empirical_ntk(net, x)
    assert k.dtype == torch.float64
    torch.testing.assert_close(k, torch.full((2, 2), 3e40 + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="x1 has NaN or Inf"):
        empirical_ntk(net, torch.full((2, 3), math.inf))
    with pytest.raises(NumericalOverflowError, match="not finite even in float64"):
        empirical_ntk(torch.nn.Linear(3, 1).double(), torch.full((2, 3), 1e160,
                                                                 dtype=torch.float64))
