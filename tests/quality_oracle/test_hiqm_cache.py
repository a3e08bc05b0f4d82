"""The HIQM fit's disk cache under a bad cache location: a clear error for a file, a warning where unwritable."""
import warnings

import pytest

from his_common.storage import CacheLocationError
from quality_oracle.hiqm import HIQMOracle, _fit_cached


@pytest.fixture(autouse=True)
def fresh_memo():
    _fit_cached.cache_clear()  # the shipped fit may be memoised in memory by another test
    yield
    _fit_cached.cache_clear()


def test_a_cache_variable_naming_a_file_is_a_clear_error(tmp_path, monkeypatch):
    regular = tmp_path / "cache_file"
    regular.write_text("")
    monkeypatch.setenv("HIS_MARL_CACHE", str(regular))
    with pytest.raises(CacheLocationError, match=f"HIS_MARL_CACHE='{regular}'.* is a file, not a folder"):
        HIQMOracle.from_csv()
    assert regular.read_text() == ""


def test_an_unwritable_cache_folder_costs_a_warning_not_the_fit(unwritable_folder, monkeypatch):
    monkeypatch.setenv("HIS_MARL_CACHE", str(unwritable_folder))
    with pytest.warns(RuntimeWarning, match="cannot store the HIQM fit in .* it stays in memory only"):
        oracle = HIQMOracle.from_csv()
    assert max(r.rmse for r in oracle.fit_report()) <= 0.006


def test_the_fit_is_stored_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache"))
    first = HIQMOracle.from_csv()
    stored = list((tmp_path / "cache" / "hiqm").glob("*.json"))
    assert len(stored) == 1
    _fit_cached.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = HIQMOracle.from_csv()  # read back from disk
    assert again.fit_report() == first.fit_report() and again.fit_checks() == first.fit_checks()
    for iota in (0, 1):
        assert (again.families[iota].coefficients == first.families[iota].coefficients).all()
