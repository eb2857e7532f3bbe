"""Benchmarks of the studies' speed: how close a trial runs to the hardware, and what Ray Tune,
checkpoints and ASHA cost or save. Not part of the test suite; run them by hand:

    python -m benchmarks                       # everything (the study runs take tens of minutes on 2 cores)
    python -m benchmarks throughput --quick    # seconds: the trainable's step vs a naive loop
    python -m benchmarks overhead asha         # quick studies through Ray Tune, with and without ASHA
    python -m benchmarks gpu                   # CIFAR-shaped VGG epochs on CUDA ("skipped: no CUDA" otherwise)

Each benchmark prints its tables and appends them, with a description of the machine, to
BENCHMARKS.md at the repository root (see benchmarks/common.py).

- `throughput`: samples/s of our training step (studies/engine/loop.py's own `make_replicas`,
  `make_unit` and `train_block`, imported, not copied) against the loop of the hand-run reports, in the same
  process, interleaved, at the same thread count.
- `overhead`: a study's wall time against the sum of its trials' own compute.
- `asha`: the same quick study as a full grid and with ASHA: compute used, and the best config;
  run for the studies with more than one configuration per ASHA group (optimizer_comparison).
- `gpu`: CIFAR-10-shaped epoch time of the VGG CNN on CUDA, naive DataLoader path vs studies.engine.loop's
  resident data, GPU augmentation and channels_last, bf16 autocast and (optionally) torch.compile.
- `packed`: K configs of one MLP trained in one process with torch.func (vmap), vs K trainings
  one after another as studies.engine.loop trains a trial's seeds.
- `compiled`: the training step through torch.compile (`--compile on`) against the eager one: samples/s
  and % of peak for the recurrent cells and the MLPs at K = 1 and 5, cold and warm compile times, and the
  steps it takes to earn them back.
- `compile_studies`: the quick palindrome, arithmetic_shift and lr_schedule studies with `--compile off`
  and `--compile on`: both wall times and every claim's verdict in both arms.
- `evaluation`: one report of a quick trial of every study: its training against its measurement, split
  into BatchNorm's refresh, the training-set accuracy, validation, test and the extra test sets.
- `database`: what recording every trial in Optuna's database costs the driver (`studies.engine.record`):
  the searcher's calls with a SQLite file against in memory, and their share of a real study's wall time.
- `validity` (run by name only, `python -m benchmarks validity [STUDY ...] [--repeats N]`): each
  study's default command N times with new seeds, and whether its claims held, into VALIDITY.md.
"""

import studies  # noqa: F401  (puts the project root first on sys.path: our `datasets` wins)

NAMES = ("throughput", "overhead", "asha", "gpu", "packed", "compiled", "database", "evaluation", "compile_studies")
