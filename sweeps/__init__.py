"""Sweep specs, the plan, the Ray Tune worker and driver, the run directory, the CLI.

The modules form a stack: each imports only modules of its own layer or of layers below it,
with no import circle, and never imports another module of this package inside a function
(imports inside functions are kept for heavy or optional packages: torch, Ray, pandas, trackers),
so `ncsweep validate`, `keys` and `status` run without torch or Ray. tests/test_layers.py keeps
this true; docs/architecture.md says what each layer holds.
"""

LAYERS = (   # bottom to top
    ("names", ("layout", "faults", "yamlsafe", "stop")),                       # run-directory names, fault hooks
    ("storage", ("store", "lock", "procs", "crash", "probe")),                 # files of a run directory, its lock
    ("spec", ("checks", "keys", "plan", "crosschecks", "spec")),               # parse + check a spec, expand its plan
    ("units", ("fuse", "pack")),                                               # several configurations per Ray trial
    ("worker", ("worker",)),                                                   # inside a Ray trial
    ("driver", ("finish", "verify", "summary", "logs", "loggers", "progress", "driver")),   # Tune, settling trials
    ("cli", ("validate", "submit", "cli", "job")),                             # `ncsweep …`, the Ray Job entrypoint
)
