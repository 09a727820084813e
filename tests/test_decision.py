"""The decision module: one owner for thresholds by model, gallery size, photo or video, adapted scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from facerec.decision import UNKNOWN, Policy, ScoreMap, identify_policy, verify_threshold
from facerec.embedders import get_spec
from facerec.gallery import Adaptation, Candidate, GalleryMeta

META = GalleryMeta.new("dlib-resnet", 128, Path("/w.dat"), "0" * 64)


def test_policy_follows_the_calibrated_table_by_gallery_size():
    thresholds = get_spec("dlib-resnet").thresholds
    for people in (1, 10, 600):
        policy = identify_policy(META, people)
        assert policy.threshold == pytest.approx(thresholds.identify_for(people))
        assert policy.rule == "centroid" and f"{people} people" in policy.source
    assert identify_policy(META, 10, video=True).threshold > identify_policy(META, 10).threshold  # video is stricter


def test_a_given_threshold_wins_and_says_so():
    policy = identify_policy(META, 10, threshold=0.5)
    assert policy.threshold == 0.5 and "given" in policy.source


def test_an_adapted_gallery_maps_thresholds_onto_its_scale():
    score_map = ScoreMap(base_mean=0.8, base_std=0.05, mean=0.5, std=0.1)
    adapted = META.adapted(Path("/adapted.pt"), "1" * 64, Adaptation("/w.dat", "0" * 64, {}, score_map))
    base = identify_policy(META, 10).threshold
    assert identify_policy(adapted, 10).threshold == pytest.approx(score_map.apply(base))
    assert "adapted" in identify_policy(adapted, 10).source
    assert adapted.on_base() == META  # rollback restores exactly the base metadata


def test_metadata_round_trips_through_its_rows():
    score_map = ScoreMap(0.8, 0.05, 0.5, 0.1)
    adapted = META.adapted(Path("/a.pt"), "1" * 64, Adaptation("/w.dat", "0" * 64, {"people": 3}, score_map))
    for meta in (META, adapted):
        rows = {k: v for k, v in meta.to_rows().items() if v is not None}
        assert GalleryMeta.from_rows(rows, Path("/g")) == meta


def test_decide_names_at_or_above_the_threshold():
    policy = Policy(0.9, "centroid", "test")
    assert policy.decide([Candidate("ann", 0.9), Candidate("bob", 0.5)]) == "ann"
    assert policy.decide([Candidate("ann", 0.8999)]) == UNKNOWN
    assert policy.decide([]) == UNKNOWN


def test_verify_threshold_is_the_models_unless_given():
    assert verify_threshold("dlib-resnet") == get_spec("dlib-resnet").thresholds.verify
    assert verify_threshold("dlib-resnet", 0.3) == 0.3
