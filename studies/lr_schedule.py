"""StepLR and gradient clipping on the palindrome RNN (docs/references.md#lr_schedule, and the side finding of
section 4): without a schedule, does the vanilla RNN at T=20 learn and then collapse; does StepLR keep
it, at the cost of slowing T=5; does clipping at 1 rather than 10 reduce the collapse?

Scientific: lr_schedule (none | step: StepLR, gamma 0.7) x clip (none, 1, 10: the max gradient norm
of each seed) x cell (rnn, lstm) x sequence length T (5, 20). Nuisance: none. Fixed: hidden 128,
batch 128, Adam, LSTM forget-gate bias 1, cross-entropy of the logits, fused torch.nn cells; fresh
palindromes every step, fixed held-out sets per seed (the palindrome study's task and models).

StepLR is counted in iterations: an iteration is one report block of `steps_per_report` (200)
optimizer steps, and the scheduler steps once per block, so the lr is multiplied by `lr_gamma` every
`lr_step_size` blocks. `full` is the hand-run setup: lr 1e-3, 10,000 steps (50 blocks), StepLR every
10 blocks (2,000 steps; four decays). `quick` keeps the decay interval at a fifth of the run (every 3
of 15 blocks: 600 of 3,000 steps; four decays) and trains the vanilla RNN only, at lr 2e-3: twice
the hand-run lr brings its rise and collapse at T=20 (at ~3,000 and ~10,000 steps with lr 1e-3)
into 3,000 steps, and the LSTM at T=20 would cost as much CPU as every RNN trial together.

    python -m studies.lr_schedule                                   # quick: the RNN, 3,000 steps, 6 seeds, CPU
    python -m studies.lr_schedule --budget full --gpus-per-trial 0.25   # 10,000 steps, 5 seeds, both cells
"""

from studies import Budget, Study, cross, run

SCHEDULES = ["none", "step"]
CLIPS = [None, 1.0, 10.0]  # None: no clipping

STUDY = Study(
    name="lr_schedule",
    doc=__doc__,
    grid=cross(cell=["rnn", "lstm"], seq_len=[5, 20], lr_schedule=SCHEDULES, clip=CLIPS),
    fixed=dict(
        task="palindrome",
        model="rnn",
        impl="fused",
        hidden_size=128,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
        forget_bias=1.0,
        lr_gamma=0.7,
        steps_per_report=200,
    ),
    datasets=("palindrome",),
    # ASHA groups trials by the scientific values and there is no nuisance search: one trial per group, nothing
    # to stop, so the grace is the whole run. lr_step_size is in iterations (blocks of steps_per_report steps).
    budgets={
        "smoke": Budget(
            iterations=4,
            grace=4,
            reduction=2,
            grid=cross(cell=["rnn"], seq_len=[5], lr_schedule=SCHEDULES, clip=[None, 1.0])
            + cross(cell=["lstm"], seq_len=[5], lr_schedule=["step"], clip=[10.0]),
            fixed=dict(steps_per_report=30, lr=1e-2, lr_step_size=2, n_eval=512),
        ),
        # 6 seeds: the collapse comes in some seeds and not in others, and the rank test needs 5-6 a side
        "quick": Budget(
            iterations=15,
            seeds=6,
            grace=15,
            reduction=2,
            grid=cross(cell=["rnn"], seq_len=[5, 20], lr_schedule=SCHEDULES, clip=CLIPS),
            fixed=dict(lr=2e-3, lr_step_size=3, n_eval=2048),
        ),
        "full": Budget(iterations=50, seeds=5, grace=50, reduction=2, fixed=dict(lr_step_size=10)),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
