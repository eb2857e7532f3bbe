"""The engine that runs a study, in the order a run goes through it:

- `study`: what a study module declares (`Study`, `Budget`, `cross`);
- `source`: where the study's module lives, its analysis module, its git state, its command;
- `plan`: the command line, checked into a `Plan` (nothing started yet);
- `checks`: what is checked before Ray starts (storage, address, data, the analysis module);
- `config`: the loop's hyperparameters and `check_config`;
- `task`: the task protocol (`Task`, `Data`, the default batches and measure); `tasks`: the built-in ones;
- `loop`: the one training loop, a Ray Tune function trainable; `seeds`: the form a trial reports in;
- `search`: the grid x Optuna searcher and the grouped ASHA;
- `cluster`: the Ray that a study runs on; `progress`: what the terminal shows;
- `results`: the tables and the manifest; `runner`: `run` and `execute`, which tie them together.

Nothing here imports a catalogue study: the engine knows the protocols, not the studies.
"""
