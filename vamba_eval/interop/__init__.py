"""Interoperability with other evaluation harnesses (lmms-eval).

* ``lmms_tasks``  — which vamba-eval task an lmms-eval task name is, and how its docs map to our ids
* ``lmms_output`` — read an lmms-eval ``--output_path`` folder (results json + ``--log_samples`` jsonl)
* ``lmms_import`` — turn it into a vamba-eval run directory (``vamba-eval import lmms-eval``)
* ``parity``      — official vs lmms-eval scoring on the same responses (``parity.html``)

The lmms-eval *model plugin* (VAMBA inside lmms-eval) lives in ``vamba_eval.integrations``.
None of these modules imports lmms-eval: they read its files.
"""
