"""Validators: prove on the data that every target depends only on its bounded window.

>>> from posgen.store.formats import to_dataset_dict
>>> from posgen.spec import TaskSpec
>>> spec = TaskSpec(task="cot", train_size=20, val_size=5, test_size=5)
>>> report = validate(to_dataset_dict(spec), spec)
>>> report.ok, report.facts["cot"]["test"]["max_lookback"]
(True, 255)
"""

from posgen.validate.audits import QuestionLookbacks
from posgen.validate.report import CheckResult, Report
from posgen.validate.run import AuditThresholds, validate
from posgen.validate.sources import SourceError

__all__ = [
    "AuditThresholds",
    "CheckResult",
    "QuestionLookbacks",
    "Report",
    "SourceError",
    "validate",
]
