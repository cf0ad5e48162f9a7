from fissile.ui.format import clock, duration_ms, percent, rate, sparkline_path


def test_numbers_are_written_short() -> None:
    assert [duration_ms(v) for v in (None, 0.25, 12.4, 2500)] == ["-", "0.25 ms", "12 ms", "2.50 s"]
    assert [percent(v) for v in (None, 0.0, 0.1234)] == ["-", "0.0%", "12.3%"]
    assert [rate(v) for v in (None, 0.0, 0.333, 42.42)] == ["-", "0.0", "0.33", "42.4"]
    assert clock("2026-01-02T03:04:05.678+00:00") == "2026-01-02 03:04:05"
    assert clock(None) == "-"


def test_a_sparkline_spans_its_box_and_breaks_where_nothing_was_measured() -> None:
    path = sparkline_path([0, 5, 10], width=100, height=22)
    assert path == "M0.0,21.0 L50.0,11.0 L100.0,1.0"
    assert sparkline_path([1, None, 1, 1], width=90, height=22) == (
        "M0.0,1.0 h0 M60.0,1.0 L90.0,1.0"
    )
    assert sparkline_path([0, 0], width=10, height=12) == "M0.0,11.0 L10.0,11.0"
    assert sparkline_path([]) == ""
