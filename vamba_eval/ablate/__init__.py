"""Ablation matrices: ``vamba-eval ablate SPEC.yaml`` (issue 6, items 3–4).

``spec`` (the YAML, validated), ``runner`` (train what is missing through ``vamba_eval.train``'s stage
functions, evaluate through ``vamba_eval.run.api.evaluate``, resumable), ``results`` (statistics from
the files), ``page`` (``ablation.html``). The command line is ``vamba_eval.cli_ablate``.
"""
