"""CSV loader: header detection, label column choice, classification vs regression, malformed lines."""
import numpy as np
import pytest

from distbp.data import DataError, load_csv, load_dataset


def _write(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_header_label_column_found_by_name(tmp_path):
    X, y, names = load_csv(_write(tmp_path, "a,label,b\n1,x,2\n3,y,4\n"))
    assert np.array_equal(X, [[1, 2], [3, 4]]) and list(y) == ["x", "y"] and names == ["a", "b"]


def test_csv_without_header_takes_the_last_column(tmp_path):
    X, y, names = load_csv(_write(tmp_path, "1,2,0\n3,4,1\n"))
    assert np.array_equal(X, [[1, 2], [3, 4]]) and list(y) == ["0", "1"] and names == ["x0", "x1"]


def test_csv_label_column_by_index_and_out_of_range(tmp_path):
    path = _write(tmp_path, "1,2,0\n3,4,1\n")
    X, y, _ = load_csv(path, label_column=0)
    assert np.array_equal(X, [[2, 0], [4, 1]]) and list(y) == ["1", "3"]
    with pytest.raises(DataError, match="label column 5 is out of range"):
        load_csv(path, label_column=5)


@pytest.mark.parametrize("text, words", [
    ("", "is empty"),
    ("a,b\n", "no data rows"),
    ("1,2,0\n3,4\n", "line 2: expected 3 columns, found 2"),
    ("a,b,y\n1,2,0\n3,oops,1\n", "line 3 column 2: 'oops' is not a number"),
    ("1,nan,0\n", "line 1: features must be finite"),
])
def test_csv_malformed_file_names_the_line(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as e:
        load_csv(path)
    assert str(path) in str(e.value) and words in str(e.value)


def test_csv_string_labels_become_sorted_classes(tmp_path):
    rows = "".join(f"{i},{i % 2},{['cat', 'dog', 'ant'][i % 3]}\n" for i in range(30))
    d = load_dataset(_write(tmp_path, "f1,f2,animal\n" + rows), label_column="animal")
    assert d.task == "classification" and d.num_classes == 3 and d.classes == ["ant", "cat", "dog"]


def test_csv_fractional_labels_make_a_regression_set(tmp_path):
    rows = "".join(f"{i},{i * 0.5 + 0.25}\n" for i in range(20))
    d = load_dataset(_write(tmp_path, "x,y\n" + rows))
    assert d.task == "regression" and d.num_classes is None and d.train[1].shape[1] == 1


def test_csv_single_class_is_an_error(tmp_path):
    with pytest.raises(DataError, match="single label value"):
        load_dataset(_write(tmp_path, "1,5\n2,5\n3,5\n"))
