"""The ``clearft`` sub-commands: each takes the client and the parsed arguments, prints its result
(text, or JSON with ``--json``) and returns the exit status."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from pydantic import BaseModel

from clearft.client import Client
from clearft.errors import ApiError, UsageError
from clearft.models import Dataset, Job
from clearft.progress import describe_epoch, describe_warning


def _print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    print(json.dumps(value, indent=2, default=str))


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())


def _show_dataset(d: Dataset) -> None:
    print(f"{d.id}  {d.status}  {d.row_count} rows  {d.name!r}")
    print(f"classes: {json.dumps(d.class_histogram)}")
    if d.parent_id or d.lineage:
        counts = ", ".join(f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in (d.lineage or {}).items()
                           if not (isinstance(v, list) and not v))
        print(f"version of {d.parent_id or '-'} from job {d.from_job_id or '-'}: {counts}")


def _number(value: Any, digits: int = 3) -> str:
    """A summary number for a line of text: ``0.183``, or ``?`` when the service did not give it."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def describe_verdict(summary: dict[str, Any]) -> list[str]:
    """The report's verdict as lines: ``verdict: reliable (held-out agreement 0.850 vs majority 0.350 on 40
    rows)``; when not reliable, whether the flags were withheld, then each reason and the advice."""
    reliability = summary.get("reliability") or {}
    if not reliability:
        return []
    verdict = reliability.get("verdict") or ("reliable" if reliability.get("reliable") else "not reliable")
    evidence = (f"{reliability.get('evidence', '?')} agreement {_number(reliability.get('agreement'))} vs majority "
                f"{_number(reliability.get('majority_rate'))} on {reliability.get('rows', '?')} rows")
    if reliability.get("reliable"):
        return [f"verdict: {verdict} ({evidence})"]
    kept = "flags withheld" if summary.get("flags_withheld") else "flags kept (clear.flag_when_unreliable)"
    lines = [f"verdict: {verdict} - {kept} ({evidence})"]
    lines += [f"  reason: {reason}" for reason in reliability.get("reasons") or []]
    if reliability.get("advice"):
        lines.append(f"  try: {reliability['advice']}")
    return lines


def describe_report(summary: dict[str, Any]) -> str:
    """``noise report: 12 of 60 rows flagged (the 60: 48 trained on, 12 held out); estimated noise rate 0.183``
    (the split sizes are of every row, not of the flagged ones)."""
    parts = []
    if summary.get("train_rows") is not None and summary.get("validation_rows") is not None:
        parts.append(f" (the {summary.get('rows', 0)}: {summary['train_rows']} trained on, "
                     f"{summary['validation_rows']} held out)")
    if summary.get("flags_withheld"):
        parts.append("; flags withheld: the report is not reliable")
    noise = f"; estimated noise rate {_number(summary['estimated_noise_rate'])}" \
        if summary.get("estimated_noise_rate") is not None else ""
    return f"noise report: {summary.get('flagged', 0)} of {summary.get('rows', 0)} rows flagged{''.join(parts)}{noise}"


def _show_job(job: Job) -> None:
    print(f"{job.id}  {job.status}  attempt {job.attempt}  {'CleaR ' if job.routed else ''}{job.method} "
          f"on {job.base_model}, dataset {job.dataset_id}")
    epochs = job.training.get("epochs")
    print(f"progress {job.progress:.0%}  epoch {min((job.epoch or 0) + 1, epochs or 1)}/{epochs}  "
          f"step {job.global_step}/{job.max_steps or '?'}  phase {job.phase or '-'}  "
          f"loss {'-' if job.loss is None else f'{job.loss:.4f}'}")
    metrics = dict(job.metrics or {})
    warnings = metrics.pop("warnings", None) or []
    if metrics:
        print("metrics: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in metrics.items()))
    if job.report_summary:
        print(describe_report(job.report_summary))
        for line in describe_verdict(job.report_summary):
            print(line)
    for message in warnings:  # posted while training, at the stage it names; the verdict is on the final model
        later = " (posted during training; the verdict above is on the final model)" if job.report_summary else ""
        print(describe_warning(message) + later)
    if job.error:
        print(f"error: {job.error.code}: {job.error.message}")
    if job.comparison:
        print(describe_comparison(job.comparison))


def describe_comparison(comparison: dict[str, Any]) -> str:
    """``compared with job_...: eval_accuracy 0.700 -> 0.800 (+0.100), ...`` for the numbers both jobs have."""
    before, after = comparison.get("before") or {}, comparison.get("after") or {}
    parts = [f"{k} {_number(before[k])} -> {_number(after[k])} ({v:+.3f})"
             for k, v in (comparison.get("difference") or {}).items()]
    return f"compared with {comparison.get('from_job_id')}: " + (", ".join(parts) or "no metric in common")


def _emit(args: argparse.Namespace, value: Any, show) -> int:
    if args.json:
        _print_json(value)
    else:
        show(value)
    return 0


def datasets_upload(client: Client, args: argparse.Namespace) -> int:
    """Upload a file with its column mapping."""
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    dataset = client.datasets.upload(args.file, text_column=args.text_column, label_column=args.label_column,
                                     text_pair_column=args.text_pair_column, id_column=args.id_column,
                                     gold_label_column=args.gold_label_column, labels=labels, name=args.name,
                                     format=args.format)
    return _emit(args, dataset, _show_dataset)


def datasets_list(client: Client, args: argparse.Namespace) -> int:
    """List datasets."""
    items = client.datasets.list(limit=args.limit)
    return _emit(args, items, lambda ds: _table([[d.id, d.status, d.row_count, d.name, f"{d.created_at:%Y-%m-%d %H:%M}"]
                                                 for d in ds], ["ID", "STATUS", "ROWS", "NAME", "CREATED"]))


def datasets_get(client: Client, args: argparse.Namespace) -> int:
    """Show one dataset."""
    return _emit(args, client.datasets.get(args.id), _show_dataset)


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    training = {k: getattr(args, k) for k in ("epochs", "batch_size", "learning_rate", "max_length", "seed")
                if getattr(args, k) is not None}
    clear = {k: getattr(args, k) for k in ("warmup_epochs", "routing_cap") if getattr(args, k) is not None}
    for item in args.set:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("clear", "training"):
            raise UsageError(f"--set {item!r}: write clear.FIELD=VALUE or training.FIELD=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        (clear if section == "clear" else training)[name] = value
    top = {"validation_fraction": args.validation_fraction}
    for section, values in (("clear", clear), ("training", training), ("job", top)):
        for name, value in values.items():
            if not _json_number_ok(value):
                raise UsageError(f"{section}.{name}={value!r}: JSON has no NaN or infinity, and the service takes "
                                 "no number past a float's range; give a finite value")
    return clear, training


def _json_number_ok(value: Any) -> bool:
    """Whether ``value`` (a setting, possibly nested) holds only numbers JSON and a float can carry."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**1023
    if isinstance(value, (list, tuple)):
        return all(_json_number_ok(v) for v in value)
    if isinstance(value, dict):
        return all(_json_number_ok(v) for v in value.values())
    return True


def jobs_create(client: Client, args: argparse.Namespace) -> int:
    """Submit a job, and with ``--wait`` follow it to its end."""
    clear, training = _settings(args)
    job = client.jobs.create(args.dataset, method=args.method, routed=False if args.plain else None,
                             base_model=args.base_model, validation_dataset_id=args.validation_dataset,
                             validation_fraction=args.validation_fraction, clear=clear, training=training,
                             from_job=args.from_job)
    if not args.wait:
        return _emit(args, job, _show_job)
    print(f"job {job.id} created; following it (Ctrl-C stops following, not the job)", file=sys.stderr)
    return _wait(client, job.id, args)


def _wait(client: Client, job_id: str, args: argparse.Namespace) -> int:
    job = client.jobs.wait(job_id, progress=not args.no_progress, timeout=args.timeout)
    _emit(args, job, _show_job)
    return 0 if job.status == "succeeded" else 1


def jobs_wait(client: Client, args: argparse.Namespace) -> int:
    """Follow a job until it ends."""
    return _wait(client, args.id, args)


def jobs_list(client: Client, args: argparse.Namespace) -> int:
    """List jobs."""
    jobs = client.jobs.list(status=args.status, limit=args.limit)
    rows = [[j.id, j.status, f"{j.progress:.0%}", f"{'CleaR ' if j.routed else ''}{j.method}", j.dataset_id,
             f"{j.created_at:%Y-%m-%d %H:%M}"] for j in jobs]
    return _emit(args, jobs, lambda _: _table(rows, ["ID", "STATUS", "PROGRESS", "METHOD", "DATASET", "CREATED"]))


def jobs_get(client: Client, args: argparse.Namespace) -> int:
    """Show one job."""
    return _emit(args, client.jobs.get(args.id), _show_job)


def jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    """Cancel a job."""
    return _emit(args, client.jobs.cancel(args.id), _show_job)


def _event_line(event_type: str, data: dict[str, Any]) -> str:
    payload = data.get("data") or {}
    if event_type == "epoch":
        return describe_epoch(payload, None)
    if event_type == "warning":
        return describe_warning(data.get("message"))
    text = data.get("message") or ""
    return f"{event_type} {payload.get('status', '')} {text}".rstrip() if event_type == "state" else text


def jobs_events(client: Client, args: argparse.Namespace) -> int:
    """Print the event log; with ``-f`` keep following it until the job ends."""
    last = None
    for event in client.jobs.events(args.id):
        last = event.id
        if args.json:
            print(event.model_dump_json())
        else:
            number = event.seq if event.seq is not None else event.id  # the job's own 1, 2, 3 ... (no gaps)
            print(f"{event.created_at:%H:%M:%S} #{number} {_event_line(event.type, event.model_dump())}")
    if not args.follow:
        return 0
    for item in client.jobs.stream(args.id, last_event_id=last):
        if args.json:
            print(json.dumps({"event": item.event, "id": item.id, "data": item.data}), flush=True)
        elif item.id is not None:
            number = (item.data or {}).get("seq", item.id)
            print(f"#{number} {_event_line(item.event, item.data)}", flush=True)
        elif item.event == "end":
            print(f"job ended {item.data.get('status')}", flush=True)
    return 0


def jobs_adapter(client: Client, args: argparse.Namespace) -> int:
    """Download (and unpack) the adapter."""
    path = client.jobs.download_adapter(args.id, args.output, extract=not args.archive)
    print(f"adapter of {args.id} saved to {path}")
    return 0


REPORT_COLUMNS = ["rank", "row_index", "split", "given_label", "suggested_label", "label_quality", "flagged",
                  "text", "flag_reason"]
TEXT_SHOWN = 50


def _report_filters(args: argparse.Namespace) -> dict[str, Any]:
    return {"flagged": True if args.flagged else None, "given_label": args.given_label,
            "predicted_label": args.predicted_label, "split": args.split,
            "decided": True if args.decided else False if args.undecided else None}


def _cell(column: str, value: Any) -> Any:
    """One table cell: label_quality to 4 places, texts cut to ``TEXT_SHOWN`` characters, missing ones blank."""
    if isinstance(value, float) and value != value:  # NaN: a value this row does not have
        return None
    if column == "label_quality" and isinstance(value, float):
        return f"{value:.4f}"
    if column == "text" and isinstance(value, str) and len(value) > TEXT_SHOWN:
        return value[:TEXT_SHOWN - 3] + "..."
    return value


def _print_rows(frame, top: int) -> None:
    """The first ``top`` rows as a left-aligned table; the reason, the last column, in full."""
    records = frame.head(top).to_dict(orient="records")
    _table([[_cell(c, r.get(c)) for c in REPORT_COLUMNS] for r in records], REPORT_COLUMNS)


def jobs_noise_report(client: Client, args: argparse.Namespace) -> int:
    """Save the noise report to a file, or print its verdict and first rows in rank order."""
    filters = _report_filters(args)
    if args.output:
        path = client.jobs.save_noise_report(args.id, args.output, **filters)
        print(f"noise report of {args.id} saved to {path}")
        return 0
    frame = client.jobs.noise_report(args.id, **filters)
    if args.json:
        print(frame.head(args.top).to_json(orient="records", indent=2))
        return 0
    summary = frame.attrs.get("summary") or {}
    print(describe_report(summary))
    for line in describe_verdict(summary):
        print(line)
    if frame.empty:
        which = " matching these filters" if any(v is not None for v in filters.values()) else ""
        print(f"the noise report of {args.id} has no rows{which}")
        return 0
    print(f"the {min(args.top, len(frame))} likeliest wrong{' of these' if any(filters.values()) else ''} "
          "(rank order: flagged rows first, then ascending label_quality):")
    _print_rows(frame, args.top)
    return 0


def datasets_version(client: Client, args: argparse.Namespace) -> int:
    """Make a version of a dataset from a job's review decisions."""
    return _emit(args, client.datasets.create_version(args.id, args.from_job, name=args.name), _show_dataset)


def datasets_download(client: Client, args: argparse.Namespace) -> int:
    """Save a dataset's rows as CSV, JSONL or Parquet."""
    path = client.datasets.download_rows(args.id, args.output)
    print(f"rows of {args.id} saved to {path}")
    return 0


def datasets_delete(client: Client, args: argparse.Namespace) -> int:
    """Delete a dataset (with --cascade its versions and jobs too)."""
    try:
        client.datasets.delete(args.id, cascade=args.cascade)
    except ApiError as exc:
        if exc.code == "dataset_in_use" and not args.cascade:
            print("clearft: to delete it with its versions and jobs, add --cascade", file=sys.stderr)
        raise
    print(f"dataset {args.id} deleted{' with its versions and jobs' if args.cascade else ''}")
    return 0


def jobs_delete(client: Client, args: argparse.Namespace) -> int:
    """Delete a finished job."""
    client.jobs.delete(args.id)
    print(f"job {args.id} deleted")
    return 0


def _row_decision(item: str) -> dict[str, Any]:
    """``3=accept`` / ``5=relabel:LABEL`` as a decision; ``UsageError`` on anything else."""
    index, sep, action = item.partition("=")
    action, colon, label = action.partition(":")
    if not sep or not index.strip().isdigit() or action not in ("accept", "keep", "relabel", "drop") \
            or (action == "relabel") != bool(colon and label):
        raise UsageError(f"--row {item!r}: write INDEX=accept, INDEX=keep, INDEX=drop or INDEX=relabel:LABEL")
    return {"row_index": int(index), "action": action, **({"label": label} if action == "relabel" else {})}


def jobs_decide(client: Client, args: argparse.Namespace) -> int:
    """Record decisions on rows (--row) or on every row matching a rule (--action with conditions)."""
    if bool(args.row) == bool(args.action):
        raise UsageError("give --row INDEX=ACTION (repeatable) or --action with rule conditions, not both")
    if args.row:
        counts = client.jobs.decide(args.id, [_row_decision(item) for item in args.row])
    else:
        rule = {"flagged": True if args.flagged else False if args.unflagged else None,
                "min_suggested_confidence": args.min_confidence, "given_label": args.given_label,
                "suggested_label": args.suggested_label, "split": args.split}
        rule = {k: v for k, v in rule.items() if v is not None}
        if not rule and not args.all_rows:
            raise UsageError("--action without a condition would decide every row of the report: add a condition "
                             "(--flagged, --min-confidence, --given-label, --suggested-label, --split) or --all-rows")
        if rule and args.all_rows:
            raise UsageError("--all-rows decides every row: give it without conditions")
        counts = client.jobs.decide(args.id, rule={**rule, **({"all_rows": True} if not rule else {})},
                                    action=args.action)
    if args.json:
        _print_json(counts)
    else:
        actions = ", ".join(f"{k} {v}" for k, v in counts["by_action"].items() if v)
        print(f"{counts['recorded']} row(s) decided{': ' + actions if actions else ''}")
    return 0


def jobs_decisions(client: Client, args: argparse.Namespace) -> int:
    """List a job's review decisions in row order."""
    items = client.jobs.list_decisions(args.id, action=args.action, limit=args.limit)
    return _emit(args, items, lambda ds: _table([[d["row_index"], d["action"], d["label"], d["decided_at"]]
                                                 for d in ds], ["ROW", "ACTION", "LABEL", "DECIDED"]))


def review(client: Client, args: argparse.Namespace) -> int:
    """``clearft review JOB --accept-flagged [--min-confidence X]``: one bulk decision on the flagged rows."""
    rule = {"flagged": True, "min_suggested_confidence": args.min_confidence, "given_label": args.given_label,
            "suggested_label": args.suggested_label, "split": args.split}
    counts = client.jobs.decide(args.id, rule={k: v for k, v in rule.items() if v is not None}, action=args.action)
    if args.json:
        _print_json(counts)
    else:
        print(f"{counts['recorded']} flagged row(s) decided: {args.action}"
              + ("" if counts["recorded"] else " (no flagged row matched these conditions)"))
        dataset = client.jobs.get(args.id).dataset_id
        print(f"next: clearft datasets version {dataset} --from-job {args.id}")
    return 0


def _show_prediction(run) -> None:
    source = run.dataset_id or run.input_name or "-"
    print(f"{run.id}  {run.status}  {run.progress:.0%}  job {run.job_id}  input {source}  "
          f"{run.row_count if run.row_count is not None else '?'} rows{'  labelled' if run.labelled else ''}")
    summary = run.summary or {}
    if summary.get("predicted_histogram"):
        print(f"predicted: {json.dumps(summary['predicted_histogram'])}")
    if run.labelled and summary.get("flags_withheld"):
        reasons = "; ".join((summary.get("model_reliability") or {}).get("reasons") or [])
        print("label check: flags withheld, because the model's own noise report was not reliable"
              + (f" ({reasons})" if reasons else "") + f"; {summary.get('candidates', 0)} row(s) would have been flagged")
    elif run.labelled and "flagged" in summary:
        rate = summary.get("estimated_noise_rate")
        print(f"label check: {summary['flagged']} row(s) flagged"
              + (f", estimated noise rate {_number(rate)}" if rate is not None else ""))
    if run.error is not None:
        print(f"error: {run.error.code}: {run.error.message}")


def predict(client: Client, args: argparse.Namespace) -> int:
    """Queue a prediction run, wait for it, and save its rows to ``-o``; exit 1 unless it succeeded."""
    if args.dataset and any(getattr(args, k) for k in ("text_column", "text_pair_column", "label_column",
                                                        "id_column")):
        raise UsageError("--text-column/--label-column/... describe a --file; a --dataset has its columns already")
    if args.output:
        kind = args.output.lower().rsplit(".", 1)[-1]
        if kind not in ("csv", "jsonl"):
            raise UsageError(f"cannot save prediction rows as {args.output!r}: name the file .csv or .jsonl")
    run = client.predictions.predict(args.id, dataset_id=args.dataset, file=args.file,
                                     text_column=args.text_column, text_pair_column=args.text_pair_column,
                                     label_column=args.label_column, id_column=args.id_column,
                                     batch_size=args.batch_size, label_check=not args.no_label_check)
    if args.no_wait:
        return _emit(args, run, _show_prediction)
    print(f"prediction run {run.id} queued; waiting for it (Ctrl-C stops waiting, not the run)", file=sys.stderr)
    run = client.predictions.wait(run.id, timeout=args.timeout)
    _emit(args, run, _show_prediction)
    if run.status != "succeeded":
        return 1
    if args.output:
        path = client.predictions.download(run.id, args.output)
        print(f"rows of {run.id} saved to {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def predictions_list(client: Client, args: argparse.Namespace) -> int:
    """List a job's prediction runs."""
    runs = client.predictions.list(args.job_id)
    return _emit(args, runs, lambda rs: _table([[r.id, r.status, f"{r.progress:.0%}", r.dataset_id or r.input_name,
                                                 r.row_count] for r in rs],
                                               ["ID", "STATUS", "PROGRESS", "INPUT", "ROWS"]))


def predictions_get(client: Client, args: argparse.Namespace) -> int:
    """Show one prediction run."""
    return _emit(args, client.predictions.get(args.id), _show_prediction)


def predictions_cancel(client: Client, args: argparse.Namespace) -> int:
    """Cancel a prediction run."""
    return _emit(args, client.predictions.cancel(args.id), _show_prediction)


def predictions_download(client: Client, args: argparse.Namespace) -> int:
    """Save a run's rows as CSV or JSONL."""
    path = client.predictions.download(args.id, args.output, flagged=True if args.flagged else None)
    print(f"rows of {args.id} saved to {path}")
    return 0


def _count(n: int | None) -> str:
    """A parameter count as 22.7M, 26.0K or 950."""
    if not n:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def models(client: Client, args: argparse.Namespace) -> int:
    """List the server's base models with their architecture, size and methods."""
    items = client.models()

    def show(ms: list[dict[str, Any]]) -> None:
        _table([[f"{m['id']}{' (default)' if m.get('default') else ''}", m.get("architecture") or "-",
                 _count(m.get("parameters")), m.get("max_length") or "-",
                 ", ".join(m.get("methods") or []) or f"unusable: {m.get('error')}"] for m in ms],
               ["MODEL", "ARCHITECTURE", "PARAMETERS", "MAX_LENGTH", "METHODS"])
        refused = [(m["id"], k, v) for m in ms for k, v in (m.get("refused") or {}).items()]
        for name, method, reason in refused:
            print(f"  {name}: no {method}: {reason}")

    return _emit(args, items, show)
