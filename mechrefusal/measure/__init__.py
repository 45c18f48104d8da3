"""Measurements of a model under interventions: mean activations, refusal scores and KL, generation,
judges, judged refusal rates and ablation sweeps. Above `interventions`, below the direction finders.

Add a measurement: a function taking ``(model, instructions, *, intervention=None)`` in the module of its
kind (one forward pass: ``metrics.py``; generation: ``evaluation.py``), or a new module here, with a test on a
tiny model. Add a judge: a class with ``measures`` and ``judge(instructions, completions) -> list[Verdict]`` in
the ``judges`` package (see its docstring).
"""
