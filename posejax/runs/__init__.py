"""What a run is made of and how to restore it.

The config edge (:mod:`~posejax.runs.setup`: Hydra config -> frozen dataclasses, model,
formulation), the train state and optimizer, orbax checkpoints, and run directories
(:mod:`~posejax.runs.directory`: resolve, rebuild the set-up, restore the newest parameters).
Training, evaluation, inference and the experiment tools all build on it; it imports none of
them.
"""
