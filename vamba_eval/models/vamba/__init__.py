"""Our VAMBA implementation: config, hybrid decoder, Mamba mixers + kernel backends, checkpoint I/O, conversion."""
