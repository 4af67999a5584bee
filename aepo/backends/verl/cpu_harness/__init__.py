"""verl's real stack on a machine without a GPU: the CPU test harness, not the plug-in.

What a user runs to check a node or the plug-in on CPU lives here, apart from what a
training run imports: ``cpu_platform`` (a CUDA stand-in platform whose device is the CPU,
loaded by verl by module name), ``e2e`` (a few AEPO steps on the built-in task through verl's
own stack, ``make e2e``) and ``scale_out`` (the same across two simulated Ray nodes, with kills
during checkpoint saves). docs/e2e.md and docs/scale_out.md.
"""
