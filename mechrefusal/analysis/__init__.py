"""Analyses of found directions and trained checkpoints: causal independence, projections, and the
report with its figures. Above the direction finders; the `analyze` job runs them.

Add an analysis: a module here returning JSON-ready numbers for a model and a `DirectionSet`, called from
``mechrefusal/analyze.py`` into ``report.json``; a figure is a builder in ``plots.py`` that reads those
numbers; a paper figure (``analyses/fig_*.py``) is a builder in ``paper/`` that reads the jobs' outputs.
"""
