"""Every registered study keeps the study contract (genlab.studies.checks.check_study)."""
import pytest

from genlab.studies import STUDIES
from genlab.studies.checks import check_study


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_keeps_the_contract(name, tmp_path):
    check_study(STUDIES[name], tmp_path)
