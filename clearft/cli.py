"""clearft: the CleaR fine-tuning service from the command line.

    clearft datasets upload train.csv --text-column text --label-column label
    clearft jobs create --dataset ds_... --epochs 3 --wait
    clearft jobs list | get ID | cancel ID | events ID -f
    clearft jobs adapter ID -o adapter/
    clearft jobs noise-report ID -o report.csv
    clearft jobs decide ID --row 3=drop --row 5=relabel:2 | --action accept --flagged --min-confidence 0.9
    clearft datasets version DATASET --from-job ID ; datasets download ID -o rows.csv ; datasets delete ID
    clearft review JOB --accept-flagged --min-confidence 0.9
    clearft jobs create --dataset VERSION --from-job ID --wait ; jobs delete ID
    clearft predict JOB --dataset ID -o predictions.csv  |  predict JOB --file new.csv -o predictions.csv
    clearft predictions list JOB | get ID | cancel ID | download ID -o FILE.csv
    clearft models

--url (or $CLEARFT_URL) names the service, --api-key (or $CLEARFT_API_KEY, or the file
$CLEARFT_API_KEY_FILE, or the embedded service's $CLEAR_DATA_DIR/api-key, ./var/api-key, or the key file
the embedded service recorded for --url at its start, found from any folder) the key.
Exit status: 0 done, 1 the service refused or the job did not succeed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import httpx

from clearft import commands
from clearft.client import Client
from clearft.errors import ApiError, ClearFTError, UsageError

PEFT_METHODS = ("lora", "adapter", "prefix", "bitfit", "full")
SHOWN_DETAILS = 20


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1 (``--top -1`` printed every row, ``--limit 0`` nothing)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _datasets(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("datasets", help="upload, list and show datasets").add_subparsers(
        dest="command", required=True)
    upload = group.add_parser("upload", help="upload a CSV, JSONL or Parquet file (every row is validated)")
    upload.add_argument("file")
    upload.add_argument("--text-column", default="text")
    upload.add_argument("--label-column", default="label")
    upload.add_argument("--text-pair-column")
    upload.add_argument("--id-column")
    upload.add_argument("--gold-label-column", help="ground truth: only scores the noise report, never trained on")
    upload.add_argument("--labels", help="the declared label set, comma-separated")
    upload.add_argument("--name")
    upload.add_argument("--format", choices=("csv", "jsonl", "parquet"))
    group.add_parser("list", help="datasets, newest first").add_argument("--limit", type=_positive, default=50)
    group.add_parser("get", help="one dataset").add_argument("id")
    version = group.add_parser("version", help="a new dataset from this one and a job's review decisions")
    version.add_argument("id")
    version.add_argument("--from-job", required=True, help="a succeeded job trained on the dataset")
    version.add_argument("--name")
    download = group.add_parser("download", help="save every row as CSV, JSONL or Parquet (by the file's suffix)")
    download.add_argument("id")
    download.add_argument("-o", "--output", required=True, help="FILE.csv, FILE.jsonl or FILE.parquet")
    delete = group.add_parser("delete", help="delete a dataset and its rows")
    delete.add_argument("id")
    delete.add_argument("--cascade", action="store_true", help="also its versions and the jobs using them")


def _create(group: argparse._SubParsersAction) -> None:
    create = group.add_parser("create", help="submit a fine-tuning job")
    create.add_argument("--dataset", required=True, help="training dataset id")
    create.add_argument("--from-job", help="retrain: take this job's settings (the flags given override them)")
    create.add_argument("--method", choices=PEFT_METHODS, help="default lora (or the --from-job job's)")
    create.add_argument("--plain", action="store_true", help="plain PEFT, without CleaR routing")
    create.add_argument("--base-model")
    create.add_argument("--validation-dataset")
    create.add_argument("--validation-fraction", type=float)
    for flag, kind in (("--epochs", int), ("--batch-size", int), ("--learning-rate", float),
                       ("--max-length", int), ("--seed", int)):
        create.add_argument(flag, type=kind, help="training setting")
    create.add_argument("--warmup-epochs", type=int, help="CleaR setting")
    create.add_argument("--routing-cap", type=float, help="CleaR setting")
    create.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="any other setting, e.g. --set clear.distill_weight=0.5 (VALUE as JSON)")
    create.add_argument("--wait", action="store_true", help="follow the job until it ends")
    _wait_flags(create)


def _wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--timeout", type=float, help="give up waiting after this many seconds")


def _jobs(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("jobs", help="create, follow and download jobs").add_subparsers(
        dest="command", required=True)
    _create(group)
    listing = group.add_parser("list", help="jobs, newest first")
    listing.add_argument("--status", choices=("queued", "running", "cancelling", "succeeded", "failed", "cancelled"))
    listing.add_argument("--limit", type=_positive, default=50)
    group.add_parser("get", help="one job: state, progress, metrics, the report's verdict and warnings"
                     ).add_argument("id")
    group.add_parser("cancel", help="cancel a job").add_argument("id")
    wait = group.add_parser("wait", help="follow a job until it ends (progress bar)")
    wait.add_argument("id")
    _wait_flags(wait)
    events = group.add_parser("events", help="the job's event log")
    events.add_argument("id")
    events.add_argument("-f", "--follow", action="store_true", help="keep printing new events until the job ends")
    adapter = group.add_parser("adapter", help="download the trained adapter")
    adapter.add_argument("id")
    adapter.add_argument("-o", "--output", required=True,
                         help="folder to unpack it into; with --archive, the archive's file name (FILE.tar.gz or "
                              "FILE.tgz) or a folder to save JOB-adapter.tar.gz in")
    adapter.add_argument("--archive", action="store_true", help="keep the .tar.gz instead of unpacking it")
    report = group.add_parser("noise-report", help="download the noise report (CSV, or JSONL by suffix)")
    report.add_argument("id")
    report.add_argument("-o", "--output", help="FILE.csv or FILE.jsonl; without it the top rows are printed")
    report.add_argument("--flagged", action="store_true", help="only the flagged rows")
    report.add_argument("--given-label")
    report.add_argument("--predicted-label")
    report.add_argument("--split", choices=("train", "validation"),
                        help="only the training rows, or only the held-out rows (scored out-of-sample)")
    report.add_argument("--top", type=_positive, default=20, help="rows printed without -o")
    decided = report.add_mutually_exclusive_group()
    decided.add_argument("--decided", action="store_true", help="only rows with a review decision")
    decided.add_argument("--undecided", action="store_true", help="only rows without one")
    _review(group)


def _review(group: argparse._SubParsersAction) -> None:
    group.add_parser("delete", help="delete a finished job with its report, decisions and adapter").add_argument("id")
    decide = group.add_parser("decide", help="record review decisions on the noise report (the latest per row wins)")
    decide.add_argument("id")
    decide.add_argument("--row", action="append", default=[], metavar="INDEX=ACTION[:LABEL]",
                        help="one row: 3=accept, 4=keep, 5=drop or 6=relabel:LABEL (repeat the flag)")
    decide.add_argument("--action", choices=("accept", "keep", "drop"),
                        help="a bulk decision on every row matching the --flagged/... conditions")
    flagged = decide.add_mutually_exclusive_group()
    flagged.add_argument("--flagged", action="store_true", help="rule: only flagged rows")
    flagged.add_argument("--unflagged", action="store_true", help="rule: only unflagged rows")
    decide.add_argument("--min-confidence", type=float, help="rule: suggested_confidence at least this (0-1)")
    decide.add_argument("--given-label", help="rule: only rows with this given label")
    decide.add_argument("--suggested-label", help="rule: only rows with this suggested label")
    decide.add_argument("--split", choices=("train", "validation"), help="rule: only these rows")
    decide.add_argument("--all-rows", action="store_true",
                        help="rule: every row of the report (needed for --action without a condition)")
    listing = group.add_parser("decisions", help="the job's review decisions in row order")
    listing.add_argument("id")
    listing.add_argument("--action", choices=("accept", "keep", "relabel", "drop"))
    listing.add_argument("--limit", type=_positive, default=1000)


def _review_command(sub: argparse._SubParsersAction) -> None:
    review = sub.add_parser("review", help="decide on a job's flagged rows in one go (the latest decision per row wins)")
    review.add_argument("id", help="the job")
    what = review.add_mutually_exclusive_group(required=True)
    what.add_argument("--accept-flagged", dest="action", action="store_const", const="accept",
                      help="take the suggested label of every flagged row")
    what.add_argument("--keep-flagged", dest="action", action="store_const", const="keep",
                      help="mark every flagged row's given label as right")
    what.add_argument("--drop-flagged", dest="action", action="store_const", const="drop",
                      help="leave every flagged row out of the next version")
    review.add_argument("--min-confidence", type=float,
                        help="only rows whose suggested_confidence is at least this (0-1), e.g. 0.9")
    review.add_argument("--given-label", help="only rows with this given label")
    review.add_argument("--suggested-label", help="only rows with this suggested label")
    review.add_argument("--split", choices=("train", "validation"), help="only these rows")


def _predict_commands(sub: argparse._SubParsersAction) -> None:
    predict = sub.add_parser("predict", help="run a trained job's model on a dataset or a file, wait, save the rows")
    predict.add_argument("id", help="a succeeded job")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="one of your datasets (its labels are checked)")
    source.add_argument("--file", help="a CSV, JSONL or Parquet file of new rows")
    predict.add_argument("--text-column", help="with --file: the text column (default text)")
    predict.add_argument("--text-pair-column", help="with --file: the second text of sentence-pair tasks")
    predict.add_argument("--label-column", help="with --file: labels to check (default: a column `label` if any)")
    predict.add_argument("--id-column", help="with --file: a row id column carried into the output")
    predict.add_argument("--no-label-check", action="store_true",
                         help="predict only: no label check even if the rows carry labels")
    predict.add_argument("--batch-size", type=_positive)
    predict.add_argument("-o", "--output", help="FILE.csv or FILE.jsonl for every row; without it a summary only")
    predict.add_argument("--no-wait", action="store_true", help="queue the run and print its id")
    predict.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    group = sub.add_parser("predictions", help="follow and download prediction runs").add_subparsers(
        dest="command", required=True)
    group.add_parser("list", help="a job's prediction runs, newest first").add_argument("job_id")
    group.add_parser("get", help="one run: state, progress, summary").add_argument("id")
    group.add_parser("cancel", help="cancel a run").add_argument("id")
    download = group.add_parser("download", help="save a run's rows as CSV or JSONL")
    download.add_argument("id")
    download.add_argument("-o", "--output", required=True, help="FILE.csv or FILE.jsonl")
    download.add_argument("--flagged", action="store_true", help="only rows whose label the check flags")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``clearft``."""
    parser = argparse.ArgumentParser(prog="clearft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="service URL (default $CLEARFT_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="API key (default $CLEARFT_API_KEY, $CLEARFT_API_KEY_FILE, then the "
                                          "embedded service's $CLEAR_DATA_DIR/api-key or ./var/api-key)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="group", required=True)
    _datasets(sub)
    _jobs(sub)
    _review_command(sub)
    _predict_commands(sub)
    sub.add_parser("models", help="the server's base models and the methods each supports")
    return parser


def print_details(details: list[dict], limit: int = SHOWN_DETAILS) -> None:
    """The row errors of a refused upload on stderr: the first ``limit`` as a table, then how many more."""
    # row errors carry row/column/code; request errors (422 invalid_request) carry param/type instead
    rows = [["-" if d.get("row") is None else str(d["row"]), str(d.get("column") or d.get("param") or "-"),
             str(d.get("code") or d.get("type") or ""), str(d.get("message") or "")] for d in details[:limit]]
    header = ["ROW", "COLUMN", "CODE", "MESSAGE"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[3], file=sys.stderr)
    if len(details) > limit:
        print(f"  ... and {len(details) - limit} more listed by the service (see --json or the API's `details`)",
              file=sys.stderr)
    if any(d.get("row") is not None for d in details):
        print("  (ROW is the 0-based data row: the header is not counted)", file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a file descriptor (a test's capture): nothing to silence


def main(argv: list[str] | None = None, *, client: Client | None = None) -> int:
    """Run one ``clearft`` command; returns the exit status (``client`` replaces the one built from flags)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--json" in argv:  # `clearft models --json` as well as `clearft --json models`
        argv = ["--json", *[a for a in argv if a != "--json"]]
    args = build_parser().parse_args(argv)
    command = getattr(args, "command", None)  # `review` and `predict` are commands of their own
    handler = getattr(commands, f"{args.group}_{command.replace('-', '_')}" if command else args.group)
    own = client is None
    try:
        client = client or Client(args.url, args.api_key)  # inside: a bad key or key file is a usage error
        code = handler(client, args)
        sys.stdout.flush()  # here, not at exit: a reader that left (`| head`) is handled below
        return code
    except UsageError as exc:
        print(f"clearft: {exc}", file=sys.stderr)
        return 2
    except ClearFTError as exc:
        print(f"clearft: {exc}", file=sys.stderr)
        if isinstance(exc, ApiError) and exc.details and any(
                d.get(k) is not None for d in exc.details for k in ("row", "column", "param", "code", "message")):
            print_details(exc.details)  # row and request errors; other details (e.g. the ids in use) are named above
        return 1
    except httpx.TransportError as exc:
        print(f"clearft: cannot reach the service at {client.url}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `clearft ... | head`: the reader left; stop quietly, as other commands do
        _silence_stdout()
        return 141
    except OSError as exc:  # a local file or folder: -o naming an existing file where a folder goes, no permission
        print(f"clearft: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("clearft: interrupted (the job keeps running; `clearft jobs cancel ID` stops it)", file=sys.stderr)
        return 130
    finally:
        if own and client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
