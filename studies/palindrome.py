"""Palindrome length against RNN, LSTM and GRU (docs/references.md#palindrome): how far back can a cell
remember? The target, the last digit of a palindrome of T+1 digits, is the first input digit.

Scientific: cell (rnn, lstm, gru) x sequence length T (5, 10, 15, 20), in the corrected setup
(LSTM forget-gate bias 1 and GRU update-gate bias 1, cross-entropy of the logits), and beside it the
hand-run flaws: the LSTM and the GRU with torch's init (gate bias 0 on average: the LSTM stays at chance
from T=15, the GRU learns T=20 in some seeds only) and the double
softmax, each at the lengths where it matters. Nuisance: none. Fixed: hidden 128, batch 128, Adam
lr 1e-3, gradient-norm clip 1.0, fused torch.nn cells (impl=scratch runs the from-scratch ones).
Fresh samples every step; fixed held-out sets per seed. ASHA compares trials only within the same
scientific values, so cells and lengths never cut each other: every configuration runs to the end.

    python -m studies.palindrome                                  # quick: 2,000 steps, 4 seeds, CPU
    python -m studies.palindrome --budget full --gpus-per-trial 0.25   # 10,000 steps, 5 seeds
"""

from studies import Budget, Study, cross, run

STUDY = Study(
    name="palindrome",
    doc=__doc__,
    # the corrected setup (gate bias 1, cross-entropy of logits) for every cell and length, and beside it the
    # hand-run flaws: the LSTM and the GRU with torch's init (gate bias 0 on average), and the double softmax
    grid=cross(cell=["rnn", "lstm", "gru"], seq_len=[5, 10, 15, 20], forget_bias=[1.0], double_softmax=[False])
    + cross(cell=["lstm"], seq_len=[5, 20], forget_bias=[0.0], double_softmax=[False])
    + cross(cell=["gru"], seq_len=[20], forget_bias=[0.0], double_softmax=[False])
    + cross(cell=["rnn", "lstm", "gru"], seq_len=[20], forget_bias=[1.0], double_softmax=[True]),
    fixed=dict(
        task="palindrome",
        model="rnn",
        impl="fused",
        hidden_size=128,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
        clip=1.0,
    ),
    datasets=("palindrome",),
    # ASHA groups trials by the scientific values, and this study has no nuisance search: one configuration
    # per group, nothing for ASHA to stop, so the grace is the whole run (no rung is drawn)
    budgets={  # iterations are blocks of steps_per_report steps
        "smoke": Budget(
            iterations=6,
            grace=2,
            reduction=2,
            grid=cross(cell=["rnn", "lstm"], seq_len=[5, 12], forget_bias=[1.0], double_softmax=[False]),
            fixed=dict(steps_per_report=50, lr=1e-2, n_eval=1024),
        ),
        # 4 seeds: the vanilla RNN at long T learns in some seeds and not in others, and a rank test needs
        # 4 seeds a side to see through one seed that ties
        "quick": Budget(iterations=10, seeds=4, grace=10, reduction=2, fixed=dict(steps_per_report=200, n_eval=2048)),
        "full": Budget(iterations=50, seeds=5, grace=50, reduction=2, fixed=dict(steps_per_report=200)),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
