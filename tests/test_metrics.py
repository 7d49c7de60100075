"""Metrics against confusion matrices and scores computed by hand."""
import numpy as np
import pytest

from distbp.training.metrics import (
    accuracy,
    classification_summary,
    confusion_matrix,
    format_confusion_matrix,
    precision_recall_f1,
    regression_summary,
    regression_sums,
)

Y_TRUE = [0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0, 2]
# by hand: class 0: one right, one called 1; class 1: both right; class 2: two right, one called 0
CM = [[1, 1, 0], [0, 2, 0], [1, 0, 2]]


def test_confusion_matrix_rows_are_true_classes_columns_predictions():
    assert confusion_matrix(Y_TRUE, Y_PRED).tolist() == CM
    assert confusion_matrix([1], [1], num_classes=3).tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_accuracy_is_the_diagonal_share():
    assert accuracy(CM) == pytest.approx(5 / 7)
    assert accuracy(np.zeros((2, 2))) == 0.0


def test_per_class_and_macro_precision_recall_f1_by_hand():
    p, r, f = precision_recall_f1(CM, average=None)
    # precision = diag / column sums (2, 3, 2); recall = diag / row sums (2, 2, 3)
    np.testing.assert_allclose(p, [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(r, [1 / 2, 1, 2 / 3])
    np.testing.assert_allclose(f, [0.5, 0.8, 0.8])        # 2pr/(p+r): 0.5; (4/3)/(5/3); (4/3)/(5/3)
    mp, mr, mf = precision_recall_f1(CM)
    assert (mp, mr, mf) == pytest.approx((13 / 18, 13 / 18, 0.7))


def test_a_class_never_predicted_scores_zero_not_nan():
    p, r, f = precision_recall_f1(confusion_matrix([0, 1], [0, 0], num_classes=2), average=None)
    assert p.tolist() == [0.5, 0.0] and r.tolist() == [1.0, 0.0] and f[1] == 0.0


def test_confusion_matrices_of_shards_add_up_to_the_whole():
    whole = confusion_matrix(Y_TRUE, Y_PRED, 3)
    parts = confusion_matrix(Y_TRUE[:3], Y_PRED[:3], 3) + confusion_matrix(Y_TRUE[3:], Y_PRED[3:], 3)
    assert np.array_equal(whole, parts)


def test_confusion_matrix_rejects_labels_out_of_range_and_length_mismatch():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1], [0])


def test_summary_and_text_form():
    s = classification_summary(CM)
    assert s["accuracy"] == pytest.approx(5 / 7) and s["confusion_matrix"] == CM
    text = format_confusion_matrix(CM).splitlines()
    assert text[0].split() == ["true\\pred", "0", "1", "2"] and text[3].split() == ["2", "1", "0", "2"]


def test_regression_summary_by_hand():
    # errors 0, 0, 2: mse 4/3, mae 2/3; total sum of squares of [1,2,3] is 2, so r2 = 1 - 4/2 = -1
    s = regression_summary(regression_sums([1, 2, 3], [1, 2, 5]))
    assert (s["mse"], s["mae"], s["r2"]) == pytest.approx((4 / 3, 2 / 3, -1.0))
    halves = regression_sums([1], [1]) + regression_sums([2, 3], [2, 5])
    assert regression_summary(halves) == pytest.approx(s)
