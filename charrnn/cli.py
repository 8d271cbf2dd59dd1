"""The command line: parses options, calls charrnn's Python API (charrnn/api.py), where the work is
done, and prints what it returns. Every command imports the API (and torch) only when it runs,
so --help and --version stay fast."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator

import click

from . import __version__, config, printing
from .cli_options import (
    CHECKPOINT_DIR_ENV,
    FiniteFloatRange,
    config_options,
    device_option,
    model_checkpoint,
    precision_option,
    threads_option,
)
from .config import DEFAULT_CHECKPOINT_DIR
from .errors import EXIT_SIGNAL_BASE, CharrnnError

CONTEXT = {"auto_envvar_prefix": "CHARRNN", "help_option_names": ["-h", "--help"]}
CACHE_DIR_ENV = "CHARRNN_CACHE_DIR"


class CharrnnGroup(click.Group):
    """Turns library errors into one-line messages with the error's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CharrnnError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


class ReaderGone(Exception):
    """stdout's reader closed it before the product was all written (`| head`)."""


@contextlib.contextmanager
def writing_product() -> Iterator[None]:
    """Wraps a command's writing to stdout. A reader that stops early has taken what it
    wanted, so the command succeeds quietly (see `main`): exit 0, where click's own handling
    of a broken pipe exits 1, which `set -o pipefail` reports as a failed pipeline."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise ReaderGone from None


@click.group(cls=CharrnnGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="charrnn")
def cli() -> None:
    """Character-level language models: train on any text, then sample or evaluate.

    \b
    Examples:
      charrnn corpus python-stdlib --max-bytes 2000000 -o data/stdlib.txt
      charrnn train data/stdlib.txt --max-time 5m
      charrnn sample --temp 0.8 --length 500
      charrnn eval held_out.txt --json
    """


# ---- corpus -------------------------------------------------------------------------------
@cli.command()
@click.argument("name", type=click.Choice(["python-stdlib", "tinyshakespeare"]))
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the text; '-' is stdout.")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Keep only the first N bytes.")
@click.option("--url", help="Fetch tinyshakespeare from this URL (a mirror) instead; the checksum is still verified.")
def corpus(name: str, output: str, max_bytes: int | None, url: str | None) -> None:
    """Write a ready-made corpus.

    \b
    python-stdlib    this Python's standard library sources: offline, any machine
    tinyshakespeare  Karpathy's 1,115,394-char file (downloaded, sha256 verified)

    \b
    Examples:
      charrnn corpus python-stdlib --max-bytes 2000000 -o data/stdlib.txt
      charrnn corpus tinyshakespeare -o data/tinyshakespeare.txt
      charrnn corpus python-stdlib | charrnn train -
    """
    from .api import write_corpus

    with writing_product():
        write_corpus(name, output, max_bytes=max_bytes, url=url)


# ---- train --------------------------------------------------------------------------------
@cli.command()
@click.argument("corpus_paths", metavar="CORPUS...", nargs=-1, required=True,
                type=click.Path(allow_dash=True, dir_okay=True))
@click.option("--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR, envvar=CHECKPOINT_DIR_ENV, show_default=True,
              type=click.Path(file_okay=False), help="Where latest.pt and best.pt go.")
@click.option("--cache-dir", envvar=CACHE_DIR_ENV, type=click.Path(file_okay=False),
              help="Where encoded corpora are kept, by sha256. [default: CHECKPOINT_DIR/cache]")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint dir's latest.pt.")
@click.option("--overwrite", is_flag=True,
              help="Start a new run in a checkpoint dir that holds one, replacing its latest.pt and best.pt.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of CORPUS.")
@click.option("--init-from", type=click.Path(), metavar="CHECKPOINT",
              help="Start a new run from a trained model's weights (a .pt file or its folder): fine-tuning. The "
                   "network's shape comes from it, the vocabulary grows to fit CORPUS, and the defaults marked "
                   "'with --init-from' apply.")
@click.option("--tensorboard", type=click.Path(file_okay=False), metavar="DIR",
              help="Also log train and validation loss, learning rate and throughput to DIR as TensorBoard "
                   "scalars (needs the tensorboard package: pip install 'charrnn[tensorboard]').")
@config_options
@device_option
@precision_option
@threads_option
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.pass_context
def train(ctx: click.Context, corpus_paths: tuple[str, ...], checkpoint_dir: str, cache_dir: str | None,
          resume: bool, overwrite: bool, encoding: str, init_from: str | None, device: str, precision: str,
          quiet: bool, **options) -> None:
    """Train a model on CORPUS: text files, directories of them, or - (stdin, alone).

    Each file is one document: several are read in sorted path order, a directory's
    files recursively in sorted order, skipping hidden files and folders (names
    starting with '.'), and the recurrent state is reset at each file's start (with
    --records, a file's end also ends a record). Globs are the shell's to expand.

    Without --max-epochs, --max-steps or --max-time, trains for 20 epochs. The
    learning-rate schedule fits whichever budget ends first.

    The defaults shown were measured on tiny-shakespeare (docs/experiments.md)
    and are the same on every device.

    CORPUS is encoded once into a token file in the cache and memory-mapped, so
    corpora larger than memory train in constant memory. Under torchrun, each
    process trains on its share of the --batch-size streams (see the README).

    \b
    Examples:
      charrnn train data/tinyshakespeare.txt --max-time 10m
      charrnn train notes/ extra.txt --checkpoint-dir runs/mix
      charrnn train data/tinyshakespeare.txt --resume
      charrnn train poems.txt --init-from runs/base --checkpoint-dir runs/poems
    """
    from .api import train as train_model

    if resume and overwrite:
        raise click.UsageError("give --resume or --overwrite, not both")
    tensorboard = options.pop("tensorboard")  # a place to log to, not an option of the run
    # Only the options the user gave: the rest take their defaults, or a resumed run's values.
    given = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    explicit = {name: value for name, value in options.items() if ctx.get_parameter_source(name) in given}
    result = train_model(corpus_paths, checkpoint_dir, device=device, precision=precision, resume=resume,
                         overwrite=overwrite, encoding=encoding, cache_dir=cache_dir or None, tensorboard=tensorboard,
                         init_from=init_from, quiet=quiet, **explicit)
    ctx.exit(result.exit_code)


# ---- sample -------------------------------------------------------------------------------
@cli.command()
@model_checkpoint("sample")
@click.option("--temp", "--temperature", "temperature", type=FiniteFloatRange(min=0),
              default=config.SAMPLE_TEMPERATURE, show_default=True,
              envvar="CHARRNN_SAMPLE_TEMP",
              help="Sampling temperature; 0 always takes the most likely character.")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample from the k most likely characters.")
@click.option("--top-p", type=FiniteFloatRange(0, 1, min_open=True),
              help="Sample from the smallest set with this mass.")
@click.option("--length", type=click.IntRange(min=0), default=config.SAMPLE_LENGTH, show_default=True,
              help="Characters to generate.")
@click.option("--prime", help="Text to start from.")
@click.option("--prime-file", type=click.File("r", encoding="utf-8-sig"),
              help="Read the prime from a file, or - for stdin.")
@click.option("--no-echo-prime", is_flag=True, help="Do not print the prime before the generated text.")
@click.option("--seed", type=int, help="Same seed, same text.")
@click.option("-n", "--num-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Samples generated together as one batch.")
@click.option("--stop", help="End a sample once it has generated this string.")
@click.option("--separator", default=config.SAMPLE_SEPARATOR, show_default=repr(config.SAMPLE_SEPARATOR),
              help="Printed between samples.")
@click.option("--novel", is_flag=True, help="Record models: only records that are not in the training corpus.")
@click.option("--unique", is_flag=True, help="Record models: no record twice.")
@click.option("--beam", type=click.IntRange(min=1), help="The K likeliest continuations (record models: complete "
              "records) instead of random ones, with their log-probabilities.")
@click.option("--json", "as_json", is_flag=True, envvar="CHARRNN_SAMPLE_JSON",
              help="Print one JSON list of the samples.")
@threads_option
def sample(checkpoint, temperature, top_k, top_p, length, prime, prime_file, no_echo_prime,
           seed, num_samples, stop, separator, novel, unique, beam, as_json) -> None:
    """Generate text from a trained model, streamed to stdout.

    A record model (trained with --records) prints -n whole records, one a line.

    \b
    Examples:
      charrnn sample --temp 0.8 --length 2000
      charrnn sample --prime "ROMEO:" --top-p 0.9 --seed 1
      charrnn sample -n 4 --stop $'\\n\\n' | less
      charrnn sample -n 20 --novel --prime ka      # a record model: 20 new names
      charrnn sample --beam 5 --prime ka           # the 5 likeliest
    """
    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    if prime_file is not None:
        try:
            prime = prime_file.read()
        except UnicodeDecodeError as e:
            raise click.BadParameter(f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})",
                                     param_hint="--prime-file") from None
    if stop == "":
        raise click.BadParameter("must not be empty", param_hint="--stop")
    if prime == "":
        raise click.BadParameter("must not be empty", param_hint="--prime")
    from .api import load

    model = load(checkpoint)
    if as_json and beam is None and model.record_separator is None:
        raise CharrnnError("--json is for --beam and for record models; stream samples are plain text")
    sampling = dict(temperature=temperature, echo_prime=not no_echo_prime)
    with writing_product():
        if beam is not None:  # generate() refuses --novel and --unique for a stream model, as it always has
            beams = model.generate(prime, length, beam=beam, novel=novel, unique=unique, **sampling)
            printing.write_beams(beams, "\n" if model.record_separator is not None else separator, as_json)
            return
        drawing = dict(sampling, top_k=top_k, top_p=top_p, seed=seed)
        if model.record_separator is not None:
            draws = model.draw_records(num_samples, prime, length, novel=novel, unique=unique, **drawing)
            printing.write_records(draws, as_json)
        elif num_samples == 1:
            printing.write_stream(model.stream(prime, length, stop=stop, novel=novel, unique=unique, **drawing))
        else:
            texts = model.generate(prime, length, n=num_samples, stop=stop, novel=novel, unique=unique, **drawing)
            printing.write_samples(texts, separator)


# ---- eval ---------------------------------------------------------------------------------
@cli.command(name="eval")
@click.argument("text_path", metavar="FILE", type=click.Path(allow_dash=True))
@model_checkpoint("eval")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--skip-unknown", is_flag=True, help="Drop characters outside the vocabulary instead of failing.")
@click.option("--streams", type=click.IntRange(min=1), default=config.EVAL_STREAMS, show_default=True,
              help="Parallel streams, each warmed on the 256 preceding chars; 1 reads the text as one stream.")
@device_option
@precision_option
@threads_option
@click.option("--json", "as_json", is_flag=True, envvar="CHARRNN_EVAL_JSON", help="Print one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def eval_command(text_path, checkpoint, encoding, skip_unknown, streams, device, precision,
                 as_json, quiet) -> None:
    """Loss of FILE (or - for stdin) under a trained model: nats/char, bits/char, perplexity.

    \b
    Examples:
      charrnn eval held_out.txt
      tail -n 2000 corpus.txt | charrnn eval - --json
    """
    from .api import load

    model = load(checkpoint, device)
    result = model.score(path=text_path, encoding=encoding, skip_unknown=skip_unknown, streams=streams,
                         precision=precision, progress=not quiet)
    with writing_product():
        if as_json:
            click.echo(json.dumps(result))
        else:
            unit = "token" if "records" in result else "char"
            click.echo(f"loss {result['loss']:.4f} nats/{unit} | {result['bpc']:.4f} bits/{unit} | "
                       f"perplexity {result['perplexity']:.3f} | {result['chars']:,} {unit}s"
                       + (f" in {result['records']:,} records" if "records" in result else "")
                       + (f" | {result['skipped']:,} unknown skipped" if result["skipped"] else ""))


# ---- viz ----------------------------------------------------------------------------------
def _feature_callback(ctx, param, values):
    from .inspect.viz import Feature

    try:
        for value in values:
            Feature.parse(value)  # checked here, so that a bad one is a usage error
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return tuple(values)


@cli.command()
@click.argument("text_path", metavar="[FILE|-]", required=False, type=click.Path(allow_dash=True, dir_okay=False))
@model_checkpoint("viz")
@click.option("-o", "--output", default=config.VIZ_OUTPUT, show_default=True,
              type=click.Path(dir_okay=False, allow_dash=True),
              help="The page to write; '-' is stdout.")
@click.option("--max-chars", type=click.IntRange(min=1), default=config.VIZ_MAX_CHARS, show_default=True,
              help="Show at most this many characters (of FILE, or of the sample).")
@click.option("--feature", "features", multiple=True, metavar="NAME=REGEX", callback=_feature_callback,
              envvar="CHARRNN_VIZ_FEATURE",
              help="Also rank units by how well they track the characters REGEX matches (repeatable).")
@click.option("--gates", is_flag=True, help="Also show the gates (LSTM i f g o, GRU r z n): a larger page.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the sample when no FILE is given.")
@click.option("--temp", "--temperature", "temperature", type=FiniteFloatRange(min=0),
              default=config.SAMPLE_TEMPERATURE, show_default=True,
              envvar="CHARRNN_VIZ_TEMP", help="Temperature of the sample when no FILE is given.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of FILE.")
@click.option("--skip-unknown", is_flag=True, help="Drop characters outside the vocabulary instead of failing.")
@click.option("-q", "--quiet", is_flag=True, help="Do not report the page's size and build time.")
def viz(text_path, checkpoint, output, max_chars, features, gates, seed, temperature, encoding,
        skip_unknown, quiet) -> None:
    """Write one self-contained HTML page of what the model makes of FILE
    (or - for stdin; without FILE, a seeded sample the model writes itself):
    each character coloured by surprise, with the model's top 5 guesses; any
    unit's activations; the units that track quotes, brackets, line position,
    indentation, line starts, capitals and --feature regexes; the training
    curves; the model card. It opens from disk, offline.

    \b
    Examples:
      charrnn viz -o viz.html
      charrnn viz play.txt --checkpoint runs/shakespeare --max-chars 3000
      charrnn viz code.py --feature 'digits=[0-9]' --feature 'keyword=\\b(def|return)\\b'
    """
    from .api import load
    from .progress import log

    model = load(checkpoint)
    with writing_product():  # -o -: a reader may stop early
        summary = model.viz(sys.stdout if output == "-" else output, text_path, max_chars=max_chars,
                            features=features, gates=gates, seed=seed, temperature=temperature, encoding=encoding,
                            skip_unknown=skip_unknown)
    where = "stdout" if output == "-" else output
    log(f"wrote {where}: {summary['bytes'] / 1e6:.1f} MB, {summary['chars']:,} characters, {summary['units']:,} "
        f"units, mean loss {summary['mean_loss']:.4f} nats/char, in {summary['seconds']:.1f} s", quiet)


# ---- export -------------------------------------------------------------------------------
@cli.command()
@model_checkpoint("export")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The file to write: .html for the page, .onnx for the ONNX step.")
@click.option("--title", help="The page's title. [default: charrnn: the checkpoint's folder]")
@click.option("-q", "--quiet", is_flag=True, help="Do not report what was written.")
def export(checkpoint, output, title, quiet) -> None:
    """Write a trained model for use outside charrnn, the format by OUTPUT's extension:

    \b
    .html  one self-contained page that writes, draws records and co-writes in any
           browser, offline from disk; settings from the link, e.g.
           model.html#prime=ROMEO:&temp=0&length=300&run
    .onnx  the one-character step (ids and state in, logits and state out) for
           onnxruntime and other runtimes (pip install 'charrnn[onnx]')

    \b
    Examples:
      charrnn export -o model.html
      charrnn export --checkpoint runs/names -o names.html --title "New names"
      charrnn export -o model.onnx
    """
    from .api import load
    from .progress import log

    model = load(checkpoint)
    summary = model.export(output, title=title)
    log(f"wrote {summary['output']}: {summary['bytes'] / 1e6:.2f} MB, {summary['format']} of a {summary['cell']} "
        f"{summary['layers']}x{summary['hidden']} with {summary['vocab_size']} symbols", quiet)


# ---- info ---------------------------------------------------------------------------------
@cli.command()
@click.argument("checkpoint_path", metavar="[CHECKPOINT]", required=False, type=click.Path())
@click.option("--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR, envvar=CHECKPOINT_DIR_ENV, show_default=True,
              type=click.Path())
@click.option("--json", "as_json", is_flag=True, envvar="CHARRNN_INFO_JSON", help="Print one JSON object.")
def info(checkpoint_path, checkpoint_dir, as_json) -> None:
    """Describe a checkpoint: model, vocabulary, training progress, corpus.

    \b
    Examples:
      charrnn info
      charrnn info checkpoints/best.pt --json
    """
    from .api import load

    summary = load(checkpoint_path or checkpoint_dir).info()
    with writing_product():
        if as_json:
            click.echo(json.dumps(summary, ensure_ascii=False))
            return
        if summary["records"] is None:
            summary["records"] = "no (a stream model)"
        else:
            summary["records"] = f"{summary['records']['count']:,} (separator {summary['records']['separator']!r})"
        lineage = summary.pop("lineage")
        if lineage is not None:
            loss = lineage.get("best_val_loss")
            summary["fine-tuned from"] = (f"{lineage.get('base_folder')}/{lineage.get('base')}, step "
                                          f"{lineage.get('steps')}" + (f", val loss {loss:.4f}" if loss else "")
                                          + f", corpus {lineage.get('corpus_source')} "
                                          f"(sha256 {str(lineage.get('corpus_sha256'))[:12]}...)")
        for key, value in summary.items():
            click.echo(f"{key:<16} {value}")


def main() -> None:
    """Console entry point: click's handling, exit 130 on Ctrl-C, quiet when stdout's reader goes away."""
    _reopen_closed_standard_streams()
    try:
        code = cli.main(prog_name="charrnn", standalone_mode=False)
        sys.stdout.flush()
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_SIGNAL_BASE + 2)
    except (ReaderGone, BrokenPipeError):  # a bare BrokenPipeError: the flush just above, or any write
        # to stdout made outside writing_product()
        _exit_discarding_stdout(0)
    except OSError as e:  # stdout on a full disk, a file that vanished mid-run, ...
        where = f" ({e.filename})" if e.filename else ""
        click.echo(f"Error: {e.strerror or e}{where}", err=True)
        _exit_discarding_stdout(1)
    sys.exit(code if isinstance(code, int) else 0)


def _reopen_closed_standard_streams() -> None:
    # Started with `2>&-` or `>&-`, Python has None for the stream, and the next file opened
    # (a checkpoint) would take the free descriptor, so that anything written to fd 2 would
    # land in it. /dev/null takes the number instead; output written there is discarded.
    # sys.stdin stays None, which reading a corpus from `-` reports as a closed stdin.
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            spare = os.open(os.devnull, os.O_RDONLY if mode == "r" else os.O_WRONLY)
            if spare != fd:
                os.dup2(spare, fd)
                os.close(spare)
            if name != "stdin":
                setattr(sys, name, open(fd, mode, closefd=False))


def _exit_discarding_stdout(code: int) -> None:
    # The Python docs' recipe for a broken pipe: point stdout at devnull so the interpreter's
    # final flush does not raise again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(code)
