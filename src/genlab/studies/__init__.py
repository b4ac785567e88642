"""The studies, registered by name on import, in the order the report presents them."""
from genlab.studies.base import STUDIES, Context, Study, Summary, Unit, UnitResult, get_study, register

# isort: off
from genlab.studies import randomization  # noqa: F401
from genlab.studies import double_descent  # noqa: F401
from genlab.studies import lottery  # noqa: F401
from genlab.studies import expressivity  # noqa: F401
from genlab.studies import regularization  # noqa: F401
from genlab.studies import description_length  # noqa: F401
from genlab.studies import measures  # noqa: F401
from genlab.studies import layer_robustness  # noqa: F401
from genlab.studies import intrinsic_dim  # noqa: F401
# isort: on

__all__ = ["STUDIES", "Context", "Study", "Summary", "Unit", "UnitResult", "get_study", "register"]
