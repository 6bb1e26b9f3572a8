"""Dataset versions: a new dataset made from a parent dataset and the review decisions of a job trained on it.

Every row of the parent is carried over in ``row_index`` order with its ``row_id``, ``text``, ``text_pair`` and
``gold_label``; its label becomes the decision's label when the row was decided (``accept``: the suggested
label, ``relabel``: the chosen one, ``keep``: the given one), rows decided ``drop`` are left out, undecided rows
keep their label; ``row_index`` is renumbered 0..n-1. The version is checked like an upload (each class that
still has rows needs ``min_rows_per_class`` of them, at least 2 classes, at most ``max_rows`` rows, the tenant's
``stored_rows`` quota) and stored with one ``INSERT ... SELECT`` in one transaction: all of it or nothing.

Its ``sha256`` is the sha256 of its JSON lines export (``app.services.exports.rows_digest``: one
``{"id", "text", "text_pair", "label", "gold_label"}`` line per row in ``row_index`` order), and ``size_bytes``
that export's length, so ``GET /v1/datasets/{id}/rows.jsonl`` can be checked against it.
"""

from __future__ import annotations

from sqlalchemy import and_, case, func, insert, literal, or_, select
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput, until_succeeded
from app.models import Dataset, DatasetRow, Job, ReviewDecision
from app.services.datasets import get_dataset, trust_dataset_rows
from app.services.exports import rows_digest
from app.services.quotas import Quotas, check_stored_rows, lock_tenant
from app.services.uploads import NAME_MAX, safe_name

VERSION_FORMAT = "version"
LINEAGE_KEYS = ("accepted", "relabelled", "kept", "dropped", "unchanged", "labels_changed")


def version_job(session: Session, parent: Dataset, job_id: str) -> Job:
    """The tenant's succeeded job ``job_id`` trained on ``parent``.

    Raises:
        InvalidInput: no such job of the tenant (code ``unknown_job``), or one trained on another dataset.
        Conflict: the job has not succeeded with a noise report (code ``report_not_ready``).
    """
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == parent.tenant_id))
    if job is None:
        raise InvalidInput(f"from_job={job_id!r} names no job of yours", param="from_job", code="unknown_job")
    if job.dataset_id != parent.id or getattr(job, "kind", "train") != "train":
        raise InvalidInput(f"job {job_id!r} was not trained on dataset {parent.id!r} (it ran on "
                           f"{job.dataset_id!r}): use a job trained on this dataset", param="from_job")
    if job.status != "succeeded" or job.report_summary is None:
        raise Conflict(f"job {job_id!r} is {job.status}: a version needs the decisions on its noise report, which "
                       f"exists once it has succeeded; {until_succeeded(job.status)}", param="from_job",
                       code="report_not_ready")
    return job


def _sources(parent: Dataset, job: Job):
    """(the parent's rows outer-joined to the job's decisions, the kept rows' condition, their new label)."""
    joined = (select().select_from(DatasetRow)
              .outerjoin(ReviewDecision, and_(ReviewDecision.job_id == job.id,
                                              ReviewDecision.row_index == DatasetRow.row_index))
              .where(DatasetRow.dataset_id == parent.id))
    kept = or_(ReviewDecision.action.is_(None), ReviewDecision.action != "drop")
    label = func.coalesce(ReviewDecision.label, DatasetRow.label)
    return joined, kept, label


def _lineage(session: Session, parent: Dataset, job: Job) -> dict[str, int]:
    joined, _, _ = _sources(parent, job)
    action, new, old = ReviewDecision.action, ReviewDecision.label, DatasetRow.label

    def total(*whens):
        return func.coalesce(func.sum(case(*whens, else_=0)), 0)

    query = joined.add_columns(
        total((action == "accept", 1)), total((action == "relabel", 1)), total((action == "keep", 1)),
        total((action == "drop", 1)),
        total((action.is_(None), 1), (and_(action != "drop", new == old), 1)),
        total((and_(action != "drop", new != old), 1)))
    return dict(zip(LINEAGE_KEYS, (int(v) for v in session.execute(query).one())))


def _histogram(session: Session, parent: Dataset, job: Job) -> dict[str, int]:
    joined, kept, label = _sources(parent, job)
    query = joined.add_columns(label, func.count()).where(kept).group_by(label)
    return {str(name): int(n) for name, n in session.execute(query)}


def _check(histogram: dict[str, int], min_rows_per_class: int, max_rows: int) -> None:
    total = sum(histogram.values())
    errors = [{"row": None, "code": "class_too_small", "column": "label",
               "message": f"class {name!r} would have {n} row(s); each class needs at least {min_rows_per_class}"}
              for name, n in sorted(histogram.items()) if n < min_rows_per_class]
    if len(histogram) < 2:
        errors.append({"row": None, "code": "too_few_classes", "column": "label",
                       "message": f"the version would have {len(histogram)} class(es); a classifier needs at least 2"})
    if total > max_rows:
        errors.append({"row": None, "code": "too_many_rows", "column": None,
                       "message": f"{total} rows, over the limit of {max_rows}"})
    if total == 0:
        errors.append({"row": None, "code": "no_rows", "column": None, "message": "every row is dropped"})
    if errors:
        codes = ", ".join(sorted({e["code"] for e in errors}))
        raise InvalidInput(f"the version would not be a valid dataset ({codes}): change the decisions (e.g. drop "
                           "fewer rows of the small classes) and try again; nothing was stored", param="from_job",
                           code="invalid_rows", details=errors)


def create_version(session: Session, dataset_id: str, job_id: str, *, tenant_id: str, name: str | None,
                   min_rows_per_class: int, max_rows: int, quotas: Quotas | None = None) -> Dataset:
    """Make and commit the version of the tenant's dataset ``dataset_id`` given by job ``job_id``'s decisions
    (see the module's docstring); returns the new ``ready`` dataset with ``parent_id``, ``from_job_id``,
    ``lineage`` (counts ``accepted``, ``relabelled``, ``kept``, ``dropped`` of the decisions applied, and
    ``unchanged`` / ``labels_changed``: rows of the version whose label is / is not the parent's, and
    ``classes_removed``: the parent's classes no row of the version has any more) and format ``version``.

    Raises:
        NotFound: no such dataset of the tenant. Conflict: the dataset is not ready, or the job has no report yet.
        InvalidInput: ``job_id`` is not the tenant's or was not trained on this dataset; or the version fails
            validation (code ``invalid_rows``, ``details`` as for an upload: ``class_too_small``,
            ``too_few_classes``, ``too_many_rows``, ``no_rows``).
        QuotaExceeded: the tenant's ``stored_rows`` quota would be passed.
    """
    parent = get_dataset(session, dataset_id, tenant_id=tenant_id)
    if parent.status != "ready":
        raise Conflict(f"dataset {dataset_id!r} is {parent.status}, not ready", param="dataset_id",
                       code="dataset_not_ready")
    job = version_job(session, parent, job_id)
    if quotas is not None:
        check_stored_rows(session, tenant_id, quotas, 0)
    histogram = _histogram(session, parent, job)
    _check(histogram, min_rows_per_class, max_rows)
    # a class every row of which was dropped or relabelled away leaves the version (and its models); its gold
    # labels stay, and score such rows as mislabelled (clear_core.data.encode_gold_labels)
    lineage = {**_lineage(session, parent, job),
               "classes_removed": [n for n in parent.label_names if n not in histogram]}
    rows = sum(histogram.values())
    order = [n for n in parent.label_names if n in histogram] + sorted(set(histogram) - set(parent.label_names))
    title = safe_name(name) if name else f"{parent.name[:NAME_MAX - 11]} (reviewed)"
    try:
        if quotas is not None:
            lock_tenant(session, tenant_id)  # held until the commit, as for an upload
            check_stored_rows(session, tenant_id, quotas, rows)
        version = Dataset(tenant_id=tenant_id, name=title, status="processing", format=VERSION_FORMAT, sha256="",
                          size_bytes=0, row_count=rows, label_names=order,
                          class_histogram={n: histogram[n] for n in order},
                          columns={role: role for role in parent.columns}, parent_id=parent.id, from_job_id=job.id,
                          lineage=lineage)
        session.add(version)
        session.flush()
        _copy_rows(session, parent, job, version.id)
        version.sha256, version.size_bytes = rows_digest(session, version.id)
        version.status = "ready"
        session.commit()
    except BaseException:
        session.rollback()  # nothing of a failed version is kept
        raise
    return version


def _copy_rows(session: Session, parent: Dataset, job: Job, version_id: str) -> None:
    """One ``INSERT ... SELECT``: the parent's kept rows with their new labels, renumbered 0..n-1."""
    joined, kept, label = _sources(parent, job)
    renumbered = func.row_number().over(order_by=DatasetRow.row_index) - 1
    source = joined.add_columns(literal(version_id, DatasetRow.dataset_id.type), renumbered, DatasetRow.row_id,
                                DatasetRow.text, DatasetRow.text_pair, label, DatasetRow.gold_label).where(kept)
    columns = ["dataset_id", "row_index", "row_id", "text", "text_pair", "label", "gold_label"]
    trust_dataset_rows(session, version_id)
    session.execute(insert(DatasetRow).from_select(columns, source))

