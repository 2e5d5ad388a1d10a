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
