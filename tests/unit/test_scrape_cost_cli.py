"""`python -m loadtests.picker.scrape_cost` refuses bad arguments before it starts anything."""

from __future__ import annotations

import pytest

from loadtests.picker.scrape_cost import main


@pytest.mark.parametrize(
    "argv",
    [["--endpoints", "0"], ["--endpoints", "2001"], ["--interval", "0"], ["--seconds", "-1"], ["--repeat", "0"]],
)
def test_bad_arguments_exit_2_with_a_message(argv: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "--endpoints must be in [1, 2000]" in capsys.readouterr().err
