"""The validity benchmark: claims over repeats into VALIDITY.md, each study's section replaced on a rerun."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks import validity


def _claims(repeat: int, verdicts: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "claim": ["A beats B", "C holds"],
            "reference": ["0.9 vs 0.8 (hand-run)", "ref"],
            "value": [f"A {0.9 + repeat / 100:.2f} vs B 0.80", "C 1.0"],
            "verdict": verdicts,
            "rule": ["Welch", "bound"],
            "why": ["", "the seeds do not separate the two"],
            "effect": ["+0.100 [+0.050, +0.150]", ""],
            "p": [0.05, float("nan")],
            "seeds": ["3 vs 3", "3"],
            "look": ["1 of 1", "1 of 1"],
            "repeat": repeat,
        }
    )


def test_summary_counts_the_repeats_that_reproduce_each_claim():
    claims = pd.concat([_claims(1, ["reproduced", "reproduced"]), _claims(2, ["reproduced", "inconclusive"])])
    s = validity.summary(claims, repeats=2).set_index("claim")
    assert s.loc["A beats B", "reproduced"] == "2/2" and s.loc["C holds", "reproduced"] == "1/2"
    assert s.loc["C holds", "repeat 2"] == (
        "**inconclusive**: C 1.0; seeds 3; look 1 of 1; (the seeds do not separate the two)"
    )  # each repeat: verdict, value, effect with its interval, p, seeds a side, the look that decided
    assert s.loc["A beats B", "repeat 1"] == (
        "**reproduced**: A 0.91 vs B 0.80; effect +0.100 [+0.050, +0.150]; p 0.05; seeds 3 vs 3; look 1 of 1"
    )


def test_every_rule_that_decided_is_listed_once():
    from analysis.verdicts import RULE_BOUND, RULE_GREATER

    assert validity.rules([RULE_GREATER, f"{RULE_GREATER}; {RULE_BOUND}", "", "the best lr per optimizer"]) == [
        RULE_GREATER,
        RULE_BOUND,
        "the best lr per optimizer",
    ]


def test_a_rerun_replaces_its_own_section_and_keeps_the_others(tmp_path):
    out = tmp_path / "VALIDITY.md"
    table = validity.summary(_claims(1, ["reproduced", "contradicted"]), repeats=1)
    validity.write_section(out, "palindrome", "quick", validity.section("palindrome", "quick", table, [], "Welch"))
    validity.write_section(
        out, "lr_scan", "quick", validity.section("lr_scan", "quick", table, [("cmd", 1.0, "ok")], "Welch")
    )
    validity.write_section(out, "palindrome", "quick", "## palindrome (quick)\n\nrerun\n")
    text = out.read_text()
    assert text.startswith("# Validity") and text.count("## palindrome (quick)") == 1 and "rerun" in text
    assert text.index("## lr_scan (quick)") < text.index("## palindrome (quick)")  # the studies' order
    assert "| A beats B |" in text and "- `cmd`: 1 s; ok" in text and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_validity_reads_the_claims_of_a_finished_repeat(lr_scan_cli, tmp_path):
    out, storage = tmp_path / "V.md", lr_scan_cli[1]  # the first repeat's command, run by conftest
    argv = ["lr_scan", "--budget", "smoke", "--repeats", "1", "--storage", str(storage), "--out", str(out), "--reuse"]
    assert validity.main(argv) == 0
    text = out.read_text()
    assert "## lr_scan (smoke)" in text and "--first-seed 0" in text and "/1 |" in text
    assert "(earlier run; claims read anew)" in text  # --reuse: the finished run is read, not run again
    assert "lr 1e-3 converges faster than 1e-4" in text  # the study's claims, with a verdict each
