"""Small-scale training of the bundled tiny checkpoints (plain PyTorch), the paper's recipe in miniature.

    python -m vamba_eval.train all --out DIR [--device cuda] [--install]

Stages (each callable alone, in this order): ``data`` (synthetic releases → cached frames,
examples, BPE tokenizer), ``teacher`` (tiny Qwen2-VL), ``convert`` (→ VAMBA variant), ``stage1``,
``stage2``, ``export`` (→ ``DIR/checkpoints/{qwen2vl-tiny,vamba-tiny}``; ``--install`` copies them
into the package). See ``vamba_eval.train.stages`` for what each stage trains.
"""
