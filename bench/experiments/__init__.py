"""Experiments that train models to answer one question (stage-1 trials, proxy trials, the budget sweep,
the cross-draw check, the diagnosis) and render what they measured. Rendering alone lives in
:mod:`bench.reporting`, which trains nothing."""
