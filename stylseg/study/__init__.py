"""The study: the paper's Algorithm 2 over a run's arms, architectures, seeds and test sets, and its results.

It stands above the libraries (:mod:`stylseg.stylize` with its cheap baselines, :mod:`stylseg.seg`,
:mod:`stylseg.metrics`), which know nothing of it; :mod:`stylseg.report`, :mod:`stylseg.reproduce` and the
notebooks 04-07 call it.

Public API::

    finetune_styles, make_arms, union_arms, arm_role       # stylseg.study.arms: the arms of a run
    compare, compare_run, test_sets                        # stylseg.study.compare: Algorithm 2
    aggregate, headline, results_markdown                  # stylseg.study.tables: RUN/seg/results.*
"""

from .arms import arm_role, finetune_styles, make_arms, union_arms
from .compare import compare, compare_run, test_sets
from .tables import aggregate, headline, results_markdown

__all__ = ["aggregate", "arm_role", "compare", "compare_run", "finetune_styles", "headline", "make_arms",
           "results_markdown", "test_sets", "union_arms"]
