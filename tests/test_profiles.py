"""What changes with the profile is declared once (clamu_helpers.reproduction.profiles), and no notebook
decides it by comparing the profile itself."""
import re

import pytest

from clamu_helpers import notebook_files, profiles


def test_a_knob_set_in_the_notebook_wins_and_none_takes_the_profile_value():
    assert profiles.default("cost_sizes", "smoke") == (6, 12)
    assert profiles.default("cost_sizes", "cpu") == profiles.default("cost_sizes", "paper") == (50, 100, 200)
    assert profiles.default("cost_sizes", "cpu", given=[10]) == [10]
    with pytest.raises(KeyError, match="unknown knob 'cost_size'"):
        profiles.default("cost_size", "cpu")
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        profiles.default("cost_sizes", "gpu")


def test_take_all_ends_last_or_first():
    assert profiles.take([2, 5, 10, 20], profiles.ALL) == [2, 5, 10, 20]
    assert profiles.take([2, 5, 10, 20], "ends") == [2, 20]
    assert profiles.take([2], "ends") == [2]
    assert profiles.take([2, 5, 10, 20], "last") == [20] and profiles.take([], "last") == []
    assert profiles.take([2, 5, 10], 2) == [2, 5] and profiles.take([2], 20) == [2]
    with pytest.raises(ValueError, match="positive count"):
        profiles.take([1, 2], 0)


def test_available_keeps_order_and_names_what_it_leaves_out(capsys):
    assert profiles.available(["images-uniform", "no-such-setting", "images-label-subsets"]) == \
        ["images-uniform", "images-label-subsets"]
    assert "skipping no-such-setting: not a registered setting" in capsys.readouterr().err


def test_settings_and_seeds_share_the_profiles_declared_here():
    from clamu_helpers import experiments
    from clamu_helpers.settings import PROFILES
    assert PROFILES is profiles.PROFILES and set(profiles.SEEDS) == set(PROFILES)
    assert experiments.seeds_for is profiles.seeds_for
    for knob, values in profiles.KNOBS.items():
        assert "*" in values and set(values) - {"*"} <= set(PROFILES), knob


@pytest.mark.parametrize("path", notebook_files.numbered(), ids=lambda p: p.stem)
def test_no_notebook_decides_by_the_profile_itself(path):
    """Only the parameters cell reads the profile; a default that depends on it comes from
    profiles.default, availability from profiles.available."""
    text = notebook_files.script_of(path).read_text()
    assert not re.search(r"profile\s*(==|!=|in\b)", text), "compare profiles in clamu_helpers.reproduction.profiles.KNOBS"
    assert "availability(" not in text, "use profiles.available(names)"


def test_cheap_notebooks_get_more_seeds_that_start_with_everyone_elses(monkeypatch):
    monkeypatch.delenv("CLAMU_SEEDS", raising=False)
    names = {p.stem for p in notebook_files.numbered()}
    for profile, extra in profiles.MORE_SEEDS.items():
        assert set(extra) <= names, set(extra) - names  # a renamed notebook would silently lose its seeds
        for notebook, seeds in extra.items():
            assert profiles.seeds_for(profile, notebook) == seeds
            # a claim judged on more seeds still holds the seeds every other notebook ran
            assert seeds[:len(profiles.SEEDS[profile])] == profiles.SEEDS[profile] and len(seeds) >= 5
    assert profiles.seeds_for("cpu", "04_clamu") == profiles.SEEDS["cpu"]
    assert profiles.seeds_for("smoke", "01_when_is_merging_scalable") == profiles.SEEDS["smoke"]
    monkeypatch.setenv("CLAMU_SEEDS", "3")
    assert profiles.seeds_for("cpu", "01_when_is_merging_scalable") == (3,)
