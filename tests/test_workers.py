"""Localisations and attacked model states prepared side by side in worker processes, then read back."""

import numpy as np
import pytest

from privloc.config import get_profile


@pytest.fixture
def smoke(tmp_path, monkeypatch):
    from privloc.study import pipeline

    monkeypatch.setenv("PRIVLOC_CACHE", str(tmp_path))
    profile = get_profile("smoke")
    pipeline.prepare_victims(["echr"], profile, progress=False)
    return profile


def test_prepared_localizations_and_states_are_read_back_without_computing_again(smoke, monkeypatch):
    from privloc.study import pipeline, state_attacks
    from privloc.study.method_comparison import control_sets

    requests = pipeline.seeded(["echr"], smoke) + [("echr", {"categories": ("PERSON",), "steps": 3})]
    assert [kw["seed"] for _, kw in requests[:-1]] == list(range(smoke.study.n_localization_seeds))
    pipeline.prepare_localizations(smoke, requests, progress=False)
    v = pipeline.victim("echr", smoke, progress=False)
    assert (v.source, v.scrubbed) == ("echr", False)
    components = pipeline.localizations("echr", smoke, progress=False)[0].masker.components
    states = [(v, ids, components) for ids in [None, np.arange(5), np.arange(5, 12)]]
    state_attacks.prepare(smoke, states, progress=False)

    def computed(*args, **kwargs):
        raise AssertionError("prepared results must be read from the cache")

    monkeypatch.setattr(pipeline, "localize", computed)
    monkeypatch.setattr(state_attacks, "attack_suite", computed)
    runs = pipeline.localizations("echr", smoke, progress=False)
    assert len(runs) == smoke.study.n_localization_seeds
    pipeline.localization("echr", smoke, categories=("PERSON",), steps=3, progress=False)
    for _, ids, components in states:
        assert state_attacks.attack(v, smoke, ids, components).per_span["in_search"].any()
    # What is cached stays cached: nothing to do, and no worker is started.
    state_attacks.prepare(smoke, states, progress=False)
    assert len(control_sets(runs[0])) == 3


def test_side_by_side_off_leaves_the_work_to_the_caller(smoke, monkeypatch):
    from dataclasses import replace

    from privloc.study import pipeline, state_attacks, workers

    def started(*args, **kwargs):
        raise AssertionError("no worker may start when side_by_side is off")

    monkeypatch.setattr(workers, "ProcessPoolExecutor", started)
    off = replace(smoke, study=replace(smoke.study, side_by_side=False))
    pipeline.prepare_localizations(off, pipeline.seeded(["echr"], off), progress=False)
    v = pipeline.victim("echr", off, progress=False)
    state_attacks.prepare(off, [(v, np.arange(3), ("mlp.in",))], progress=False)
    assert not list((pipeline.artifacts.cache_root() / "mask").glob("*/*"))
