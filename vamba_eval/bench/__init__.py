"""Efficiency benchmark of VAMBA vs Qwen2-VL (``vamba-eval bench``, issue 7).

- :mod:`flops`: analytic FLOPs per phase from the model configs;
- :mod:`subjects`, :mod:`qwen_subject`: the models (random weights, meta-device init) and their
  prefill / decode / train workloads through the suite's code paths;
- :mod:`measure`, :mod:`phases`: timing, memory, matmul ceiling, environment; VAMBA phase split;
- :mod:`runner`: the sweep (one JSON line per point, OOM → frame limit);
- :mod:`paper`, :mod:`svg`, :mod:`page`: the paper's numbers and issue 7's targets, the HTML page.
"""
