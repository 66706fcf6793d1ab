"""The engine every law is fitted with (numpy and scipy only; no torch, no model).

=================  ===========================================================================
module             holds
=================  ===========================================================================
``points``         fit inputs: any table -> validated N, D, C, loss arrays (:class:`Points`)
``laws``           law forms in log space with Jacobians; the robust (Huber) objective; fitting
``minimize``       batched L-BFGS: thousands of small minimisations as one array computation
``bootstrap``      run-resampling weights and percentile intervals
``regression``     batched weighted least-squares lines and parabolas
``allocation``     the compute-optimal N and D under the data's own FLOP convention
``result``         :class:`FitResult`, the one result type (JSON, report)
``errors``         :class:`FitError`; numpy warnings kept quiet where they are expected
=================  ===========================================================================
"""
