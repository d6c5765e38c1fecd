"""metrics.csv ends its lines with "\\n" (not the csv module's "\\r\\n"), so cut, awk and grep -x read it cleanly."""

from metaadv.training.metrics import read_metrics_csv, write_metrics_csv


def test_metrics_csv_bytes_end_lines_with_newline_only(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics_csv([{"round": 1, "val/robust_acc": 0.5}, {"round": 2, "val/robust_acc": 0.25, "train/co_detected": 1}], path)
    assert path.read_bytes() == b"round,val/robust_acc,train/co_detected\n1,0.5,\n2,0.25,1\n"
    assert read_metrics_csv(path)[1] == {"round": 2, "val/robust_acc": 0.25, "train/co_detected": 1}
