"""Profiles: sizes of a claims run, and the CNN width cap kernel claims apply."""

import pytest

from ntkcheck.arch import ArchSpec
from ntkcheck.profiles import PROFILES, get_profile, parse_widths


@pytest.mark.parametrize(("name", "cap"), [("smoke", 128), ("quick", 256), ("paper", None)])
def test_width_cap_applies_to_image_families_only(name, cap):
    profile = get_profile(name)
    assert profile.width_cap(ArchSpec(family="cnn", depth=1)) == cap
    assert profile.width_cap(ArchSpec(family="resnet", depth=1)) == cap
    assert profile.width_cap(ArchSpec(depth=3)) is None


def test_overrides_keep_the_cap_and_replace_widths_and_seeds():
    p = PROFILES["quick"].with_overrides(widths=(8, 16), n_seeds=1)
    assert (p.widths, p.n_seeds, p.cnn_max_width) == ((8, 16), 1, 256)


def test_unknown_profile_and_bad_widths_name_the_problem():
    with pytest.raises(ValueError, match="choose one of"):
        get_profile("huge")
    with pytest.raises(ValueError, match="'64;128' is not an integer"):
        parse_widths("64;128")
    assert parse_widths("256, 64") == (64, 256)
    with pytest.raises(ValueError, match="width 64 is given twice"):
        parse_widths("64,256,64")
    with pytest.raises(ValueError, match="no widths given"):
        parse_widths("")
    for text in ("64,,128", "64,128,", ",64"):
        with pytest.raises(ValueError, match="has an empty entry"):
            parse_widths(text)


def test_cnn_settings_use_a_quarter_of_the_inputs_and_at_least_eight():
    for profile in PROFILES.values():
        assert profile.n_cnn_inputs == max(8, profile.n_inputs // 4)
    assert PROFILES["quick"].n_cnn_inputs == 12 and PROFILES["smoke"].n_cnn_inputs == 8


def test_depths_grow_with_the_profile_and_every_depth_is_swept():
    assert [PROFILES[n].depths for n in ("smoke", "quick", "paper")] == [
        (1, 2), (1, 2, 4), (1, 2, 4, 8)]
    specs = PROFILES["quick"].depth_sweep(ArchSpec(depth=3, activation="erf"))
    assert [s.depth for s in specs] == [1, 2, 4]
    assert len({s.arch_id for s in specs}) == 3  # one verdict row per depth
    assert all(s.activation == "erf" for s in specs)
    assert PROFILES["quick"].with_overrides(widths=(8,)).depths == (1, 2, 4)


@pytest.mark.parametrize("bad", [(), (0, 1), (2, 1), (1, 1), (1.0, 2), (True,)])
def test_bad_depths_name_the_problem(bad):
    with pytest.raises(ValueError, match="depths must be distinct positive integers"):
        PROFILES["quick"].__class__("x", (8,), 1, 8, 1, 1, True, depths=bad)


def test_depth_width_cap_bounds_the_hidden_weights_a_depth_sweep_trains():
    quick = PROFILES["quick"]
    assert quick.depth_width_cap(ArchSpec(depth=1)) is None  # depth 1 is never capped
    assert quick.depth_width_cap(ArchSpec(depth=2)) == 1773  # 1773^2 <= 3 * 1024^2 < 1774^2
    assert quick.depth_width_cap(ArchSpec(depth=4)) == 1024
    assert PROFILES["paper"].depth_width_cap(ArchSpec(depth=8)) is None


DEPTH_CLAIM = '''
import pytest
from ntkcheck import ArchSpec

@pytest.mark.claim(id="toy-depth", statement="s", source="x", metric="m", tolerance=1.0)
def test_toy(ntk_sweep, ntk_measure, ntk_profile):
    for spec in ntk_profile.depth_sweep(ArchSpec(depth=1, activation="relu")):
        for width, seed in ntk_sweep:
            ntk_measure(spec, width=width, seed=seed, value=(spec.depth / width) ** 0.5)
'''


def test_a_depth_sweep_records_every_depth_under_its_own_architecture_id(pytester):
    import json

    pytester.makepyfile(test_toy_depth=DEPTH_CLAIM)
    result = pytester.runpytest("--ntk-profile", "smoke", "--ntk-widths", "8,16,32",
                                "--ntk-seeds", "1", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    lines = (pytester.path / "reports" / "latest" / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted({(r["arch_id"], r["depth"]) for r in records}) == [
        ("mlp-d1-relu-ntk-b", 1), ("mlp-d2-relu-ntk-b", 2)]
    assert len(records) == 2 * 3  # smoke's depths (1, 2) x 3 widths x 1 seed
