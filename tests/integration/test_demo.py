"""``tongban demo``: the guided tour runs end to end against a real node on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.demo import run_demo

pytestmark = pytest.mark.slow  # real processes or a whole federation


async def test_the_demo_tour_passes_every_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_demo(tmp_path) == 0
    out = capsys.readouterr().out
    assert "All steps verified" in out
    assert "✘" not in out
    assert out.count("✔") >= 15
    # the tour's offline step wrote its files where it was told to
    assert (tmp_path / "marriage.jws").is_file()
    assert (tmp_path / "trust-list.jws").is_file()
