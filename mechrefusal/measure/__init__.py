"""Measurements of a model under interventions: mean activations, refusal scores and KL, generation,
judges, judged refusal rates and ablation sweeps. Above `interventions`, below the direction finders."""
