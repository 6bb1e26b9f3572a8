"""The ``clearft`` sub-commands: each takes the client and the parsed arguments, prints its result
(text, or JSON with ``--json``) and returns the exit status."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import BaseModel

from clearft.client import Client
from clearft.models import Dataset, Job
from clearft.progress import describe_epoch


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


def _show_job(job: Job) -> None:
    print(f"{job.id}  {job.status}  attempt {job.attempt}  {'CleaR ' if job.routed else ''}{job.method} "
          f"on {job.base_model}, dataset {job.dataset_id}")
    epochs = job.training.get("epochs")
    print(f"progress {job.progress:.0%}  epoch {min((job.epoch or 0) + 1, epochs or 1)}/{epochs}  "
          f"step {job.global_step}/{job.max_steps or '?'}  phase {job.phase or '-'}  "
          f"loss {'-' if job.loss is None else f'{job.loss:.4f}'}")
    if job.metrics:
        print("metrics: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in job.metrics.items()))
    if job.report_summary:
        s = job.report_summary
        print(f"noise report: {s.get('flagged')} of {s.get('rows')} rows flagged")
    if job.error:
        print(f"error: {job.error.code}: {job.error.message}")


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
            raise SystemExit(f"clearft: --set {item!r}: write clear.FIELD=VALUE or training.FIELD=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        (clear if section == "clear" else training)[name] = value
    return clear, training


def jobs_create(client: Client, args: argparse.Namespace) -> int:
    """Submit a job, and with ``--wait`` follow it to its end."""
    clear, training = _settings(args)
    job = client.jobs.create(args.dataset, method=args.method, routed=not args.plain, base_model=args.base_model,
                             validation_dataset_id=args.validation_dataset,
                             validation_fraction=args.validation_fraction, clear=clear, training=training)
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
            print(f"{event.created_at:%H:%M:%S} #{event.id} {_event_line(event.type, event.model_dump())}")
    if not args.follow:
        return 0
    for item in client.jobs.stream(args.id, last_event_id=last):
        if args.json:
            print(json.dumps({"event": item.event, "id": item.id, "data": item.data}), flush=True)
        elif item.id is not None:
            print(f"#{item.id} {_event_line(item.event, item.data)}", flush=True)
        elif item.event == "end":
            print(f"job ended {item.data.get('status')}", flush=True)
    return 0


def jobs_adapter(client: Client, args: argparse.Namespace) -> int:
    """Download (and unpack) the adapter."""
    path = client.jobs.download_adapter(args.id, args.output, extract=not args.archive)
    print(f"adapter of {args.id} saved to {path}")
    return 0


def jobs_noise_report(client: Client, args: argparse.Namespace) -> int:
    """Save the noise report to a file, or print its likeliest-wrong rows."""
    filters = {"flagged": True if args.flagged else None, "given_label": args.given_label,
               "predicted_label": args.predicted_label}
    if args.output:
        path = client.jobs.save_noise_report(args.id, args.output, **filters)
        print(f"noise report of {args.id} saved to {path}")
        return 0
    frame = client.jobs.noise_report(args.id, **filters)
    if args.json:
        print(frame.head(args.top).to_json(orient="records", indent=2))
        return 0
    summary = frame.attrs.get("summary") or {}
    if frame.empty:
        which = " matching these filters" if any(v is not None for v in filters.values()) else ""
        print(f"the noise report of {args.id} has no rows{which} ({summary.get('rows', 0)} rows in all, "
              f"{summary.get('flagged', 0)} flagged)")
        return 0
    print(f"{summary.get('flagged')} of {summary.get('rows')} rows flagged; the {min(args.top, len(frame))} "
          "likeliest wrong:")
    columns = ["rank", "row_index", "given_label", "suggested_label", "label_quality", "flagged", "text"]
    print(frame.head(args.top).reindex(columns=columns).to_string(index=False, max_colwidth=60))
    return 0
