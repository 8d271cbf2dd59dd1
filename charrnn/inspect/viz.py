"""`charrnn viz`: one self-contained HTML page of what a model makes of a text.

The numbers come from trace.py (`trace`, `rank_units`); this module packs them into the page:
the text and every character's loss and top guesses, every unit's activations quantised to
63 levels (one URL-safe base64 character per value, scaled per unit), the cell search's top
units per feature, the checkpoint's metrics and its model card. The page (viz_page.html)
holds its script and styles inline: no network, no fonts, it opens from disk.
"""

from __future__ import annotations

import io
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from .. import __version__
from ..checkpoint import Checkpoint
from ..config import VIZ_MAX_CHARS, VIZ_OUTPUT
from ..errors import CharrnnError
from ..fileio import atomic_write_bytes, why_write_failed
from ..generation.sampler import Sampler, SamplingOptions
from ..pages import embedded_json, escape_html
from ..progress import format_duration
from ..runtime import threads_for_block
from ..text.reading import decoding_codec, open_corpus
from ..text.vocab import escape_chars, known_text
from .features import builtin_features, rank_units, regex_feature
from .trace import KINDS, STATE_KINDS, Trace, trace

TEMPLATE = Path(__file__).with_name("viz_page.html")
LEVELS = 63  # an odd count, so that 0 is one of them; one base64 character per activation
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TOP_GUESSES = 5
TOP_UNITS = 5


@dataclass(frozen=True)
class Feature:
    """A user feature: the characters a regex matches."""

    name: str
    pattern: str

    @classmethod
    def parse(cls, spec: str) -> Feature:
        """NAME=REGEX; raises ValueError for anything else or a regex that does not compile."""
        name, equals, pattern = spec.partition("=")
        if not equals or not name.strip() or not pattern:
            raise ValueError(f"{spec!r} is not NAME=REGEX")
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"{pattern!r} is not a regular expression: {e}") from None
        return cls(name.strip(), pattern)


def quantise(values: torch.Tensor) -> tuple[str, list[float]]:
    """Activations [T, units] as one string, unit after unit (T characters each, one of 63
    levels of value / the unit's largest |value|, 0 among them), and each unit's scale."""
    scale = values.abs().amax(0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    levels = ((values / scale + 1) * (LEVELS - 1) / 2).round().clamp(0, LEVELS - 1).to(torch.uint8)
    table = ALPHABET[:LEVELS].encode("ascii")
    encoded = bytes(levels.t().flatten().tolist())  # without numpy, the quickest way to bytes
    return encoded.translate(bytes.maketrans(bytes(range(LEVELS)), table)).decode("ascii"), \
        [round(float(s), 4) for s in scale]


def _number(value, digits: int = 4):
    """A finite float rounded for the page, else None (JSON has no NaN)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return round(float(value), digits)
    return None


def page_data(result: Trace, card: dict, metrics: list[dict], features: list[Feature] = (),
              gates: bool = False) -> dict:
    """Everything the page shows, as plain data."""
    loss = result.loss
    ids, probs = result.top(TOP_GUESSES)
    kinds = KINDS[result.cell] if gates else STATE_KINDS[result.cell]
    layers = []
    for layer in result.layers:
        packed = {}
        for kind in kinds:
            data, scale = quantise(layer[kind])
            packed[kind] = {"data": data, "scale": scale}
        layers.append(packed)
    wanted = builtin_features(result.text)
    wanted.update({f.name: regex_feature(result.text, f.pattern) for f in features})
    ranked = rank_units(result, wanted, top=TOP_UNITS)
    patterns = {f.name: f.pattern for f in features}
    search = [{"feature": name, "pattern": patterns.get(name),
               "units": [{"layer": u.layer, "kind": u.kind, "unit": u.unit, "score": round(u.score, 4)}
                         for u in units]}
              for name, units in ranked.items()]
    predicted = result.predicted.tolist()
    top_ids = [row if ok else [] for row, ok in zip(ids.tolist(), predicted)]
    return {
        "text": result.text,
        "loss": [_number(v, 3) for v in loss.tolist()],
        "top_ids": top_ids,
        "top_hit": [row.index(t) if t in row else -1 for row, t in zip(top_ids, result.targets.tolist())],
        "top_p": [[round(p, 4) for p in row] if ok else [] for row, ok in zip(probs.tolist(), predicted)],
        "labels": [result.label(i) for i in range(len(result.vocab))],
        "kinds": list(kinds),
        "hidden": result.layers[0]["h"].size(1),
        "levels": LEVELS,
        "alphabet": ALPHABET,
        "layers": layers,
        "search": search,
        "metrics": [{k: _number(m.get(k)) for k in ("step", "elapsed", "train_loss", "val_loss")}
                    for m in metrics if isinstance(m, dict)],
        "card": card,
        "mean_loss": _number(result.mean_loss),
    }


def render(data: dict, title: str = "charrnn viz") -> str:
    """The page: the template with the data inlined. Every `<` in the JSON (only ever inside its
    strings) is written \\u003c, so no `</script>` or `<!--` in the text can end or bend the script."""
    payload = embedded_json(data)
    head, tail = TEMPLATE.read_text(encoding="utf-8").split("__DATA__")
    title = escape_html(title)
    return head.replace("__TITLE__", title) + payload + tail.replace("__TITLE__", title)


# ---- the text -------------------------------------------------------------------------------
def read_text(path: str, encoding: str, max_chars: int, allowed: set[str], skip_unknown: bool) -> tuple[str, int]:
    """The first `max_chars` characters of a file (or stdin for '-') that the model can read,
    and how many unknown ones were dropped (`skip_unknown`; else they are an error)."""
    codec = decoding_codec(encoding)
    try:
        with open_corpus(path) as raw:  # stdin or a file, with one-line errors
            stream = io.TextIOWrapper(raw, encoding=codec, newline="")
            text, skipped = "", 0
            while len(text) < max_chars:  # read on past dropped characters until there are enough
                chunk = stream.read(max_chars - len(text))
                if not chunk:
                    break
                kept, dropped = known_text(chunk, allowed, skip_unknown)
                skipped += dropped
                text += kept
            stream.detach()  # open_corpus closes the file, and leaves stdin open
    except UnicodeDecodeError as e:
        raise CharrnnError(f"{path}: not {encoding} text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CharrnnError(f"{path}: {e.strerror or e}") from None
    if not text:
        raise CharrnnError(f"{path}: no characters the model knows")
    return text, skipped


def sample_text(ckpt: Checkpoint, max_chars: int, seed: int, temperature: float) -> tuple[str, str]:
    """A text the model writes itself, `max_chars` long, and a line saying how it was made.
    A stream model starts from its default prime; a record model writes records until there
    are enough, joined by its separator."""
    sampler = Sampler(ckpt.model, ckpt.vocab)
    options = SamplingOptions(temperature=temperature)
    how = f"seed {seed}, temperature {temperature:g}"
    separator = ckpt.record_separator
    if separator is None:
        prime = sampler.default_prime()
        ids = [step[0] for step in sampler.generate(prime, max(0, max_chars - len(prime)), options, seed=seed)]
        return (prime + ckpt.vocab.decode(ids))[:max_chars], f"a sample the model wrote ({how}, prime {prime!r})"
    text = ""
    for record in sampler.draw_records("", options, 64, max_chars, seed):
        text += record + separator
        if len(text) >= max_chars:
            break
    return text[:max_chars], f"records the model wrote ({how})"


# ---- the model card -------------------------------------------------------------------------
def model_card(ckpt: Checkpoint, source: str, result: Trace) -> list[list[str]]:
    """Label and value of each line of the page's model card."""
    config = ckpt.model_config
    corpus = ckpt.field("corpus", dict) or {}
    step = ckpt.field("step", int)
    best = ckpt.field("best_val_loss", (int, float))
    elapsed = ckpt.field("elapsed", (int, float))
    records = ckpt.record_separator
    length = corpus.get("length")
    where = corpus.get("source") or "unrecorded"
    rows = [
        ("checkpoint", str(ckpt.path)),
        ("cell", config.cell.upper()),
        ("layers", str(config.layers)),
        ("width", f"{config.hidden} units per layer"),
        ("parameters", f"{ckpt.model.num_parameters():,}"),
        ("vocabulary", f"{len(ckpt.vocab.chars)} characters" + (" and the record marker" if records else "")
                       + ": " + escape_chars(ckpt.vocab.chars, limit=120)),
        ("records", "no: a stream model" if records is None else f"yes, separated by {records!r}"),
        ("corpus", where + (f", {length:,} characters" if isinstance(length, int) else "")
                   + (f", sha256 {corpus['sha256'][:16]}…" if isinstance(corpus.get("sha256"), str) else "")),
        ("steps", "unrecorded" if step is None else f"{step:,}"),
        ("training time", "unrecorded" if elapsed is None else format_duration(elapsed)),
        ("best validation loss", "none recorded" if best is None
         else f"{best:.4f} nats/char ({best / math.log(2):.4f} bits)"),
        ("precision", ckpt.field("precision", str) or "unrecorded"),
        ("dropout", f"{config.dropout:g} (weight drop {config.weight_drop:g})"),
        ("this text", f"{len(result.text):,} characters: {source}; mean loss {result.mean_loss:.4f} nats/char"),
        ("made by", f"charrnn {__version__} viz"),
    ]
    return [list(row) for row in rows]


# ---- the page, written ------------------------------------------------------------------------
@dataclass(frozen=True)
class VizJob:
    """What `charrnn viz` was asked for."""

    output: str = VIZ_OUTPUT  # "-" for stdout
    text: str | None = None  # a path, "-" for stdin; None: a sample the model writes itself
    max_chars: int = VIZ_MAX_CHARS
    features: tuple[str, ...] = ()  # NAME=REGEX
    gates: bool = False
    seed: int = 0
    temperature: float = 1.0
    encoding: str = "utf-8"
    skip_unknown: bool = False


def write_page(ckpt: Checkpoint, job: VizJob, out: TextIO) -> dict:
    """Writes the page of what the model makes of a text; its size, what it shows and how long
    it took. Runs on one thread: one stream's steps are too small to share, and on a
    busy CPU two threads took 2 to 93 s where one takes 1.4 (docs/benchmarks.md, "charrnn viz")."""
    with threads_for_block(1):
        return _write_page(ckpt, job, out)


def _write_page(ckpt: Checkpoint, job: VizJob, out: TextIO) -> dict:
    started = time.perf_counter()
    try:
        features = [Feature.parse(spec) for spec in job.features]
    except ValueError as e:
        raise CharrnnError(f"--feature {e}") from None
    if job.text is None:
        text, source = sample_text(ckpt, job.max_chars, job.seed, job.temperature)
    else:
        allowed = set(ckpt.vocab.chars) | set(ckpt.record_separator or "")
        text, skipped = read_text(job.text, job.encoding, job.max_chars, allowed, job.skip_unknown)
        source = ("standard input" if job.text == "-" else job.text) + (f", {skipped:,} unknown dropped" if skipped
                                                                        else "")
    result = trace(ckpt.model, ckpt.vocab, text, separator=ckpt.record_separator)
    data = page_data(result, model_card(ckpt, source, result), ckpt.field("metrics", list) or [], features,
                     job.gates)
    html = render(data, title=f"charrnn viz: {ckpt.path.name}, {result.cell} {len(result.layers)}x{data['hidden']}")
    encoded = html.encode("utf-8")
    if job.output == "-":
        out.write(html)
    else:
        try:
            atomic_write_bytes(Path(job.output), encoded)
        except OSError as e:
            raise CharrnnError(f"cannot write {job.output}: {why_write_failed(e)}") from None
    units = len(data["layers"]) * len(data["kinds"]) * data["hidden"]
    return {"output": job.output, "bytes": len(encoded), "chars": len(result.text), "units": units,
            "mean_loss": result.mean_loss, "seconds": time.perf_counter() - started}
