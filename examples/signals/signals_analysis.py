"""Analysis of the signals study: test accuracy per kernel at its tuned lr, and two claims."""

from analysis.plots import best_per_value_figure
from analysis.verdicts import Claim, at_least, every, not_below, tuned

HEADLINE = "accuracy_vs_kernel"
CAPTIONS = {
    "accuracy_vs_kernel": "Test accuracy of each kernel size at its lr tuned on validation (the claims' view); "
    "spread over seeds."
}


def _at_tuned_lr(kernel: int):
    """Each kernel's test accuracy at its tuned lr (chosen on validation by the selection rule)."""
    return lambda t, m: tuned(t, m, f"kernel {kernel}", "metric.test_acc", kernel=kernel)


CLAIMS = [
    Claim(
        "Both kernel sizes learn the task: at the tuned lr, test accuracy is at least 0.8 (chance 1/3).",
        "a CNN that learns separates the three waves",
        lambda t, c, m: every([at_least(_at_tuned_lr(k)(t, m), 0.8) for k in (3, 9)]),
    ),
    Claim(
        "A wider kernel is not worse: at the tuned lr, kernel 9 is not below kernel 3 (within 0.02).",
        "a kernel of 9 samples sees more of a cycle",
        lambda t, c, m: not_below(_at_tuned_lr(9)(t, m), _at_tuned_lr(3)(t, m), 0.02),
    ),
]


def figures(trials, curves, manifest):
    return {
        "accuracy_vs_kernel": best_per_value_figure(
            trials, manifest, "kernel", "metric.test_acc", "Test accuracy per kernel size, at its tuned lr"
        )
    }


def findings(trials, curves, manifest):
    return []
