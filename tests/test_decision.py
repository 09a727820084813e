"""The decision module: one owner for thresholds by model, gallery size, photo or video, adapted scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_one_name_per_person_per_image():
    """Two faces whose best match is ann: the better keeps her, the other falls to its next candidate that
    meets the threshold (bob), and a third whose only candidate above it is ann is unknown."""
    policy = Policy(0.9, "centroid", "test")
    faces = [
        [Candidate("ann", 0.95, 0.95), Candidate("bob", 0.93, 0.93)],
        [Candidate("ann", 0.97, 0.97), Candidate("cat", 0.5, 0.5)],
        [Candidate("ann", 0.92, 0.92), Candidate("bob", 0.91, 0.91)],
        [Candidate("dan", 0.99, 0.99)],
    ]
    chosen = policy.name_faces(faces)
    assert [c.name if c else None for c in chosen] == ["bob", "ann", None, "dan"]
    assert policy.name_faces([]) == []


def test_a_video_floor_keeps_a_cosine_requirement():
    policy = Policy(0.0, "centroid", "test", floor=0.94)
    assert not policy.accepts(Candidate("ann", 0.939, 3.0)) and policy.accepts(Candidate("ann", 0.95, 3.0))


def test_calibrated_policy_from_the_shipped_cohort():
    """A gallery of cohort-like people: the calibrated threshold rises as the operating point tightens,
    and --max-false-accept without a cohort is refused with a one-line reason."""
    from facerec.decision import GalleryCalibration, shipped_cohort
    from facerec.embedders import get_spec
    from facerec.errors import InputError

    cohort = shipped_cohort("dlib-resnet", get_spec("dlib-resnet").sha256 or "")
    assert cohort is not None and cohort.calibration.shape == (1500, 128) and cohort.normalisation.shape == (2000, 128)
    rng = np.random.default_rng(0)
    people = cohort.normalisation[::200][:8]
    faces = np.repeat(people, 2, axis=0) + rng.normal(0, 0.01, (16, 128))
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    calibrated = GalleryCalibration(
        [f"p{i}" for i in range(8)], people, [f"p{i // 2}" for i in range(16)], faces, cohort
    )
    loose, strict = (identify_policy(META, 8, max_false_accept=r, calibrated=calibrated) for r in (0.05, 0.005))
    assert strict.threshold > loose.threshold and loose.max_false_accept == 0.05
    ranked = loose.rank(faces[:1], [[Candidate("p1", 0.5), Candidate("p0", 0.99)]])[0]
    assert ranked[0].name == "p0" and ranked[0].score is not None and ranked[0].score > ranked[1].score
    assert cohort is not shipped_cohort("dlib-resnet", "0" * 64) is None  # other weights: no cohort
    with pytest.raises(InputError, match="needs a calibrated gallery"):
        identify_policy(META, 8, max_false_accept=0.01)


def test_enrolled_photos_found_in_the_cohort_are_no_strangers():
    """A gallery enrolled from the cohort's own photos (LFW people against the shipped LFW cohort): those
    cohort faces are left out, so the threshold is the one the rest of the cohort gives; kept, they are
    100 of the 1,500 strangers, above the 5% quantile, and would push the threshold to a copy's score."""
    from facerec import calibration
    from facerec.cohort import Cohort
    from facerec.decision import SAME_PHOTO, GalleryCalibration, shipped_cohort

    cohort = shipped_cohort("dlib-resnet", get_spec("dlib-resnet").sha256 or "")
    assert cohort is not None
    people = cohort.calibration[:100]
    names = [f"p{i}" for i in range(100)]
    left_out = Cohort(cohort.normalisation, cohort.calibration[100:], cohort.description)
    calibrated = GalleryCalibration(names, people, names, people, cohort)
    expected = GalleryCalibration(names, people, names, people, left_out)
    assert calibrated.threshold(0.05) == expected.threshold(0.05)
    assert calibrated.cohort.description.endswith("less 100 copies of enrolled photos")
    assert left_out.without_copies(people, SAME_PHOTO) is left_out  # nothing to leave out: the same cohort
    # What the copies did, calibrated on the whole cohort: the threshold at a copy's score.
    person = calibration.person_stats(people, cohort.normalisation, calibrated.top_k)
    naive = calibration.calibrate(
        people, person, people, np.arange(100), cohort.calibration, cohort.normalisation, calibrated.top_k
    )
    assert naive.threshold(0.05) > 1.5 * expected.threshold(0.05)


def test_a_raw_cohort_compares_raw_cosines_and_sets_the_threshold_on_its_strangers(tmp_path):
    """The adapted camera's faces (a raw cohort, written by save_strangers without normalising): candidates
    keep their raw cosine as score, the threshold is the conformal quantile of the strangers' best raw cosine
    against the people, with no shift from the gallery's own faces, and video needs no LFW cosine floor."""
    from facerec import calibration
    from facerec.cohort import CAMERA_STRANGERS_FILE, gallery_cohort, save_strangers
    from facerec.decision import GalleryCalibration, shipped_cohort

    shipped = shipped_cohort("dlib-resnet", get_spec("dlib-resnet").sha256 or "")
    assert shipped is not None
    people, strangers = shipped.normalisation[:8], shipped.calibration[:400]
    save_strangers(tmp_path / CAMERA_STRANGERS_FILE, strangers[:0], strangers, {"weights_sha256": "w"})
    cohort = gallery_cohort(tmp_path, "w")
    assert cohort is not None and cohort.raw and len(cohort.normalisation) == 0 and len(cohort.calibration) == 400
    assert "raw cosine" in cohort.description
    names = [f"p{i}" for i in range(8)]
    calibrated = GalleryCalibration(names, people, names, people, cohort)
    best = (cohort.calibration @ people.T).max(axis=1)
    for rate in (0.05, 0.005):
        assert calibrated.threshold(rate) == calibration.threshold_for(best, rate)
    video = identify_policy(META, 8, video=True, calibrated=calibrated)
    assert video.floor == -1.0 and np.isfinite(video.threshold)  # 400 strangers certify 0.5%
    ranked = video.rank(people[:1], [[Candidate("p1", 0.5), Candidate("p0", 0.99)]])[0]
    assert [(c.name, c.score) for c in ranked] == [("p0", 0.99), ("p1", 0.5)]
    normalised = GalleryCalibration(names, people, names, people, shipped)
    assert identify_policy(META, 8, video=True, calibrated=normalised).floor > 0  # the LFW video floor
