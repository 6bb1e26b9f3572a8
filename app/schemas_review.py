"""Request and response bodies of the review loop: decisions on a job's noise report and dataset versions
made from them (``app.schemas`` holds the shared ones, ``DatasetPublic`` included)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, model_validator

from app.schemas import NO_NUL, UtcDatetime

ROW_INDEX_MAX = 2**31 - 1  # the column is a 32-bit INTEGER
MAX_DECISIONS = 50_000
Label = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]


class DecisionIn(BaseModel):
    """One decision: ``row_index`` of the report (the dataset's 0-based row), the ``action``, and for ``relabel``
    (only) the new ``label``, one of the dataset's classes."""

    model_config = ConfigDict(extra="forbid")
    row_index: int = Field(ge=0, le=ROW_INDEX_MAX)
    action: Literal["accept", "keep", "relabel", "drop"]
    label: Label | None = None

    @model_validator(mode="after")
    def _label_only_for_relabel(self) -> "DecisionIn":
        if self.action == "relabel" and self.label is None:
            raise ValueError("a relabel decision needs the new label: add \"label\"")
        if self.action != "relabel" and self.label is not None:
            raise ValueError(f"label is only given with action relabel, not {self.action}: remove it")
        return self


class DecisionRule(BaseModel):
    """Which report rows a bulk decision covers: every condition given must hold. A rule without a condition
    covers every row of the report, and only with ``all_rows: true`` (an empty rule ``{}`` decided every row, a
    slip a second request cannot take back). ``min_suggested_confidence`` is in [0, 1]; labels are compared
    exactly.

    Raises:
        ValueError: no condition and no ``all_rows: true``; ``all_rows: true`` beside a condition.
    """

    model_config = ConfigDict(extra="forbid")
    flagged: bool | None = None
    min_suggested_confidence: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    given_label: Label | None = None
    suggested_label: Label | None = None
    split: Literal["train", "validation"] | None = None
    all_rows: StrictBool = Field(False, description="true: the rule covers every row of the report (give no "
                                 "condition then).")

    @model_validator(mode="after")
    def _some_rows(self) -> "DecisionRule":
        conditions = [self.flagged, self.min_suggested_confidence, self.given_label, self.suggested_label, self.split]
        given = any(c is not None for c in conditions)
        if not given and not self.all_rows:
            raise ValueError("the rule names no condition, so it would decide every row of the report: give a "
                             "condition (flagged, min_suggested_confidence, given_label, suggested_label, split), or "
                             "\"all_rows\": true to decide every row")
        if given and self.all_rows:
            raise ValueError("all_rows: true decides every row: give it without conditions, or drop it")
        return self


class DecisionsCreate(BaseModel):
    """Either a list of ``decisions`` (at most 50,000; a row named twice takes its last one), or a bulk ``rule``
    with an ``action`` (accept, keep or drop: a rule cannot choose a label), never both."""

    model_config = ConfigDict(extra="forbid")
    decisions: list[DecisionIn] | None = Field(None, min_length=1, max_length=MAX_DECISIONS)
    rule: DecisionRule | None = None
    action: Literal["accept", "keep", "drop"] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "DecisionsCreate":
        if self.decisions is not None and (self.rule is not None or self.action is not None):
            raise ValueError("send either decisions or rule with action, not both")
        if self.decisions is None and (self.rule is None or self.action is None):
            raise ValueError("send decisions (a list) or a rule with an action (accept, keep or drop)")
        return self


class DecisionsRecorded(BaseModel):
    """How many rows a request decided (``recorded``), by action."""

    recorded: int
    by_action: dict[str, int]


class DecisionPublic(BaseModel):
    """A stored decision: the row, its action, the label it gives the row (null for ``drop``), the API key that
    made it and when."""

    model_config = ConfigDict(from_attributes=True)
    row_index: int
    action: str
    label: str | None
    api_key_id: str | None
    decided_at: UtcDatetime


class DecisionsPublic(BaseModel):
    """A page of a job's decisions in ``row_index`` order."""

    data: list[DecisionPublic]
    count: int
    next_cursor: str | None = None


class VersionCreate(BaseModel):
    """A new version of a dataset from ``from_job``'s review decisions; ``name`` defaults to the parent's name
    followed by " (reviewed)"."""

    model_config = ConfigDict(extra="forbid")
    from_job: str = Field(min_length=1, max_length=40, pattern=NO_NUL)
    name: str | None = Field(None, max_length=1000)
