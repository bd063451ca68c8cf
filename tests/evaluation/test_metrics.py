"""Evaluation arithmetic on hand-made scores and boxes whose answers are worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from facescreen.evaluation import datasets as ds
from facescreen.evaluation import metrics as mt

# ------------------------------------------------------------------------------ verification


def test_perfect_separation_gives_tar_one_at_any_far() -> None:
    genuine, impostor = [0.8, 0.9, 0.95], [0.1, 0.2, 0.3]
    for far in (1e-6, 1e-3, 0.5):
        op = mt.tar_at_far(genuine, impostor, far)
        assert op.tar == 1.0
        assert op.far == 0.0 or far >= 1 / 3
    assert mt.equal_error_rate(genuine, impostor)[0] == 0.0


def test_threshold_admits_at_most_far_of_impostors() -> None:
    impostor = np.arange(100) / 100.0  # 0.00 .. 0.99
    t = mt.threshold_at_far(impostor, 0.05)
    assert 0.94 < t <= 0.95  # just above the sixth highest: 0.95..0.99 reach it
    assert np.sum(impostor >= t) == 5
    # Below 1/n the only honest answer is "above every impostor".
    t0 = mt.threshold_at_far(impostor, 0.001)
    assert t0 > 0.99 and np.sum(impostor >= t0) == 0


def test_tar_at_far_with_interleaved_scores() -> None:
    genuine = [0.5, 0.6, 0.7, 0.8]
    impostor = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.65, 0.75]
    # FAR 0.1 of 10 impostors: one may pass (0.75), so the threshold sits just above 0.65.
    op = mt.tar_at_far(genuine, impostor, 0.1)
    assert op.far == pytest.approx(0.1)
    assert op.tar == pytest.approx(0.5)  # 0.7 and 0.8 accepted
    assert 0.65 < op.threshold <= 0.7


def test_equal_error_rate_at_the_crossing() -> None:
    # At threshold 0.65: FAR 1/4 (0.65 passes), FRR 1/4 (0.6 fails).
    eer, t = mt.equal_error_rate([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.65])
    assert eer == pytest.approx(0.25)
    assert t == pytest.approx(0.65)


def test_roc_is_exact_and_monotone() -> None:
    roc = mt.roc_curve([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.65])
    assert roc.far[0] == 0.0 and roc.tar[0] == 0.0  # threshold +inf
    assert roc.far[-1] == 1.0 and roc.tar[-1] == 1.0
    assert np.all(np.diff(roc.far) >= 0) and np.all(np.diff(roc.tar) >= 0)
    at = list(roc.thresholds).index(0.7)
    assert (roc.far[at], roc.tar[at]) == (0.0, 0.75)


def test_best_threshold_is_a_midpoint() -> None:
    t, acc = mt.best_accuracy_threshold([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
    assert t == pytest.approx(0.5) and acc == 1.0


def test_kfold_fits_each_threshold_on_the_other_folds() -> None:
    # Fold 0: genuine 0.6, 0.7; impostor 0.1, 0.2. Fold 1: genuine 0.3, 0.9; impostor 0.5, 0.05.
    scores = [0.6, 0.7, 0.1, 0.2, 0.3, 0.9, 0.5, 0.05]
    same = [True, True, False, False, True, True, False, False]
    folds = [0, 0, 0, 0, 1, 1, 1, 1]
    r = mt.kfold_accuracy(scores, same, folds)
    # Fitted on fold 1, 0.175 and 0.7 both reach 3/4; the lower wins and misplaces 0.2 of
    # fold 0 (3/4). Fitted on fold 0, 0.4 is perfect there but gets 0.3 and 0.5 wrong (2/4).
    assert r.thresholds == pytest.approx((0.175, 0.4))
    assert r.per_fold == pytest.approx((0.75, 0.5))
    assert r.mean == pytest.approx(0.625) and r.std == pytest.approx(0.125)


def test_kfold_needs_two_folds() -> None:
    with pytest.raises(ValueError):
        mt.kfold_accuracy([0.1, 0.9], [False, True], [0, 0])


# ------------------------------------------------------------------ open-set identification

MATED_SCORES = [0.9, 0.8, 0.7, 0.6, float("nan")]  # the last: no usable face
MATED_CORRECT = [True, True, False, True, False]  # 0.7 found the wrong subject
NONMATED = [0.85, 0.65, 0.3, 0.28, 0.26, 0.24, 0.22, 0.2, 0.15, 0.1]


@pytest.mark.parametrize(("fpir", "fnir", "measured"), [
    (0.05, 0.8, 0.0),  # nobody may alert: threshold above 0.85, only 0.9 is a hit
    (0.1, 0.6, 0.1),  # 0.85 may alert: threshold above 0.65, hits 0.9 and 0.8
    (0.2, 0.4, 0.2),  # threshold above 0.3: hits 0.9, 0.8, 0.6
])
def test_fnir_at_fpir_by_hand(fpir: float, fnir: float, measured: float) -> None:
    p = mt.fnir_at_fpir(MATED_SCORES, MATED_CORRECT, NONMATED, fpir)
    assert p.fnir == pytest.approx(fnir)
    assert p.fpir == pytest.approx(measured)


def test_rank_one_counts_failures_to_acquire_as_misses() -> None:
    assert mt.rank_one_rate(MATED_CORRECT) == pytest.approx(0.6)


def test_det_curve_holds_the_reported_operating_points() -> None:
    det = mt.det_curve(MATED_SCORES, MATED_CORRECT, NONMATED)
    assert det.fpir[0] == 0.0 and det.fnir[0] == 1.0
    assert np.all(np.diff(det.fpir) >= 0) and np.all(np.diff(det.fnir) <= 0)
    for fpir in (0.05, 0.1, 0.2):
        p = mt.fnir_at_fpir(MATED_SCORES, MATED_CORRECT, NONMATED, fpir)
        best = det.fnir[np.isclose(det.fpir, p.fpir)].min()
        assert best == pytest.approx(p.fnir)
    # A wrong top candidate and a failure to acquire are never hits, whatever the threshold.
    assert det.fnir[-1] == pytest.approx(0.4)


# ------------------------------------------------------------------------------- detection


def test_iou_and_size_buckets() -> None:
    assert mt.box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(1 / 3)
    assert mt.box_iou([[0, 0, 10, 10]], [[20, 20, 30, 30]])[0, 0] == 0.0
    assert mt.box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    assert [mt.size_bucket(s) for s in (15.9, 16, 31.9, 32, 64, 127.9, 128, 900)] == [
        "<16", "16-32", "16-32", "32-64", "64-128", "64-128", ">=128", ">=128"]


def test_matching_with_duplicates_and_an_invalid_ground_truth() -> None:
    gt = [[0, 0, 100, 100],  # valid, 100 px
          [200, 200, 210, 212],  # valid, 12 px, missed
          [300, 300, 340, 340]]  # marked invalid
    invalid = [False, False, True]
    dets = [[2, 2, 100, 100],  # 0.9: IoU 0.96 with the first -> true positive
            [0, 0, 90, 100],  # 0.8: the first again -> duplicate, false positive
            [301, 301, 340, 340],  # 0.7: on the invalid face -> ignored
            [500, 500, 540, 540]]  # 0.95: nothing there -> false positive
    m = mt.match_detections(gt, invalid, dets, [0.9, 0.8, 0.7, 0.95])
    assert m.gt_matched.tolist() == [True, False, False]
    assert m.det_status.tolist() == [mt.TRUE_POSITIVE, mt.FALSE_POSITIVE, mt.IGNORED,
                                     mt.FALSE_POSITIVE]
    s = mt.summarise_detections([m])
    assert s["overall"]["gt"] == 2 and s["overall"]["recall"] == pytest.approx(0.5)
    assert s["overall"]["precision"] == pytest.approx(1 / 3)
    assert s["ignored_detections"] == 1
    assert s["by_size"]["64-128"]["recall"] == 1.0
    assert s["by_size"]["64-128"]["precision"] == pytest.approx(0.5)  # 98 px TP, 100 px FP
    assert s["by_size"]["<16"]["recall"] == 0.0 and s["by_size"]["<16"]["precision"] is None
    assert s["by_size"]["32-64"]["recall"] is None
    assert s["by_size"]["32-64"]["precision"] == 0.0  # only the 40 px false positive


def test_matching_is_greedy_by_score_and_prefers_valid_faces() -> None:
    gt = [[0, 0, 100, 100]]
    m = mt.match_detections(gt, [False], [[0, 0, 100, 100], [0, 0, 80, 100]], [0.5, 0.9])
    assert m.det_status.tolist() == [mt.FALSE_POSITIVE, mt.TRUE_POSITIVE]  # higher score first
    both = [[0, 0, 100, 100], [0, 0, 100, 160]]  # valid (IoU 0.625) and invalid (IoU 1)
    m = mt.match_detections(both, [False, True], [[0, 0, 100, 160]], [0.9])
    assert m.det_status.tolist() == [mt.TRUE_POSITIVE]
    empty = mt.match_detections(np.zeros((0, 4)), [], [[0, 0, 5, 5]], [0.9])
    assert empty.det_status.tolist() == [mt.FALSE_POSITIVE]


# --------------------------------------------------------------------------------- readers


def test_wider_reader_handles_the_dummy_line_of_empty_images(tmp_path: Path) -> None:
    gt = tmp_path / "wider_val_bbx_gt.txt"
    gt.write_text("0--Parade/a.jpg\n2\n10 20 30 40 0 0 0 0 0 0 \n1 2 3 4 2 0 0 1 0 0 \n"
                  "4--Dancing/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"
                  "4--Dancing/c.jpg\n1\n5 5 10 10 0 0 0 0 0 0\n")
    images = ds.read_wider_gt(gt)
    assert [i.file for i in images] == ["0--Parade/a.jpg", "4--Dancing/b.jpg", "4--Dancing/c.jpg"]
    assert images[0].boxes.tolist() == [[10, 20, 40, 60], [1, 2, 4, 6]]
    assert images[0].invalid.tolist() == [False, True]
    assert images[1].boxes.shape == (0, 4) and images[2].event == "4--Dancing"
    assert ds.find_wider_gt(tmp_path) == gt


def test_lfw_pairs_reader(tmp_path: Path) -> None:
    for name, n in (("Ann_A", 2), ("Bob_B", 1)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (tmp_path / "data" / name / f"{name}_{i:04d}.jpg").write_bytes(b"")
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n"
                                        "Ann_A\t2\t1\nBob_B\t1\tAnn_A\t2\n")
    pairs = ds.read_lfw_pairs(tmp_path)
    assert [(p.same, p.fold) for p in pairs] == [(True, 0), (False, 0), (True, 1), (False, 1)]
    assert pairs[1].second == tmp_path / "data" / "Bob_B" / "Bob_B_0001.jpg"
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn_A\t1\t2\n")
    with pytest.raises(ds.DatasetError, match="header says"):
        ds.read_lfw_pairs(tmp_path)
