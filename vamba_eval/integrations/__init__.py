"""Plugins that put vamba-eval models inside other harnesses.

``lmms_eval_model``: VAMBA (``--model vamba``) and our Qwen2-VL baseline (``--model vamba_eval_qwen2vl``)
as lmms-eval models, registered through lmms-eval's ``lmms_eval.models`` entry-point group
(install ``vamba-eval[lmms-eval]``).
"""
