"""`build_extralt_assets`: the `run` asset (spend credits once) and the `captures` asset (load).

Both are built from a checked `SourceSpec` (`spec.py`): nothing here checks a setting again; a
run's config makes a new spec through `SourceSpec.overridden`.

No `from __future__ import annotations` here: Dagster must resolve the `dg.Config` classes.
"""

import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from .. import credits
from ..api.errors import (
    ExtraltError,
    ExtraltNotFoundError,
    ExtraltTimeoutError,
    ExtraltValidationError,
)
from ..api.models import ExportFormatName, ExtraltRun, RunStatus
from ..api.run_handler import ExtraltRunHandler
from ..naming import (
    DEFAULT_SCHEMA,
    RUN_POOL,
    WAREHOUSE_POOL,
    captures_asset_key,
    create_sent_tag,
    metadata_key,
    run_asset_key,
    run_id_tag,
    run_ids_tag,
)
from ..resource import ExtraltResource
from ..spec import (
    DEFAULT_LOCK_TIMEOUT_SECONDS,
    DEFAULT_NULL_PRICE_WARN_RATIO,
    DEFAULT_TIMEZONE,
    CreditLimit,
    LoadOptions,
    SourceSpec,
)
from .captures import build_captures_asset
from .metadata import RunMaterialization, latest_materialized_run_id, run_failure_metadata


class ExtraltRunConfig(dg.Config):
    """Per-run overrides, e.g. from the Launchpad or a schedule. Unset fields keep the defaults."""

    robot_id: str | None = Field(default=None, description="Override the robot to run.")
    start_urls: list[str] | None = Field(
        default=None, description="Override the start URLs (absolute http(s) URLs)."
    )
    budget: int | None = Field(default=None, description="Override the most captures to make.")
    auto_enrich: bool | None = Field(default=None, description="Override auto-enrichment.")
    accept_stopped: bool | None = Field(
        default=None,
        description="Materialize a run stopped outside Dagster with its partial captures "
        "instead of failing.",
    )
    poll_timeout_seconds: float | None = Field(
        default=None, description="Override how long to wait for the run."
    )


def build_extralt_assets(
    name: str,
    robot_id: str,
    start_urls: Sequence[str] | None = None,
    budget: int | None = None,
    auto_enrich: bool = False,
    *,
    poll_timeout_seconds: float | None = None,
    accept_stopped: bool = False,
    group_name: str | None = None,
    retry_policy: dg.RetryPolicy | None = None,
    pool: str | None = RUN_POOL,
    captures_pool: str | None = WAREHOUSE_POOL,
    tags: Mapping[str, str] | None = None,
    owners: Sequence[str] | None = None,
    description: str | None = None,
    schema: str = DEFAULT_SCHEMA,
    export_format: ExportFormatName = "parquet",
    null_price_warn_ratio: float = DEFAULT_NULL_PRICE_WARN_RATIO,
    duckdb_memory_limit: str | None = None,
    preserve_insertion_order: bool = False,
    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
    export_dir: str | None = None,
    history_retention: str | None = None,
    credit_limit: CreditLimit | Mapping[str, Any] | None = None,
    timezone: str = DEFAULT_TIMEZONE,
) -> list[dg.AssetsDefinition]:
    """The `extralt/<name>/run` and `extralt/<name>/captures` assets (with checks) for one source.

    Everything is validated here, at definition time, so a typo never costs an API call.
    `credit_limit` (`{"credits": 20000, "per": "month"}`, or a `CreditLimit`) refuses a run
    that could take the source past it in a calendar period of `timezone`; it needs a budget.
    """
    spec = SourceSpec.from_keywords(
        name=name,
        schema_=schema,
        auto_enrich=auto_enrich,
        robot_id=robot_id,
        start_urls=start_urls,
        budget=budget,
        poll_timeout_seconds=poll_timeout_seconds,
        export_format=export_format,
        lock_timeout_seconds=lock_timeout_seconds,
        history_retention=history_retention,
        credit_limit=credit_limit,
        timezone=timezone,
        group=group_name,
        tags=dict(tags) if tags is not None else None,
        owners=list(owners) if owners is not None else None,
    )
    load = spec.load_options(
        null_price_warn_ratio=null_price_warn_ratio,
        duckdb_memory_limit=duckdb_memory_limit,
        preserve_insertion_order=preserve_insertion_order,
        export_dir=export_dir,
    )
    return build_source_assets(
        spec,
        load,
        accept_stopped=accept_stopped,
        retry_policy=retry_policy,
        pool=pool,
        captures_pool=captures_pool,
        description=description,
    )


def build_source_assets(
    spec: SourceSpec,
    load: LoadOptions | None = None,
    *,
    accept_stopped: bool = False,
    retry_policy: dg.RetryPolicy | None = None,
    pool: str | None = RUN_POOL,
    captures_pool: str | None = WAREHOUSE_POOL,
    description: str | None = None,
    location_cap: credits.LocationCap | None = None,
) -> list[dg.AssetsDefinition]:
    """The two assets of a checked spec (a sources file's, or `build_extralt_assets`');
    `location_cap` is the cap its code location's sources share (`location_credit_limit`)."""
    _check_credit_limit(spec)
    load = load or spec.load_options()
    run_asset = _build_run_asset(
        spec,
        accept_stopped=accept_stopped,
        retry_policy=retry_policy,
        pool=pool,
        description=description,
        location_cap=location_cap,
    )
    captures_asset = build_captures_asset(spec, load, retry_policy=retry_policy, pool=captures_pool)
    return [run_asset, captures_asset]


def _check_credit_limit(spec: SourceSpec) -> None:
    """A cap needs a bounded run: without a budget a run's worst case has no bound."""
    limit = spec.credit_limit
    if limit is None:
        return
    if not spec.budget:
        raise ExtraltValidationError(
            f"credit_limit ({limit.credits:,} credits per {limit.per}) needs a budget: without "
            "one, a run's worst case has no bound and no run could be let through. Set budget "
            "(the most captures a run makes, 2 credits each), or remove credit_limit."
        )
    if credits.worst_case(spec.budget) > limit.credits:
        raise ExtraltValidationError(
            f"credit_limit ({limit.credits:,} credits per {limit.per}) is below one run's worst "
            f"case ({spec.budget:,} captures x 2 = {credits.worst_case(spec.budget):,} "
            "credits): no run could ever start. Raise credit_limit.credits or lower budget."
        )


class CreditLimitReached(dg.Failure):
    """A run was refused before any spending request: it could pass the source's cap."""


def _build_run_asset(
    spec: SourceSpec,
    *,
    accept_stopped: bool,
    retry_policy: dg.RetryPolicy | None,
    pool: str | None,
    description: str | None,
    location_cap: credits.LocationCap | None = None,
) -> dg.AssetsDefinition:
    budget_text = (
        f"budget {spec.budget:,} captures" if spec.budget else "the robot's default budget"
    )
    default_description = (
        f"Extralt run of robot `{spec.robot_id}` with {budget_text}"
        + (f" from {len(spec.start_urls)} start URL(s)" if spec.start_urls else "")
        + ". Materializing starts a run (or resumes the one a retry left behind) and waits for it."
    )

    @dg.asset(
        key=run_asset_key(spec.name),
        description=description or default_description,
        group_name=spec.group,
        retry_policy=retry_policy,
        pool=pool,
        tags=dict(spec.tags or {}),
        owners=list(spec.owners or []),
        kinds={"extralt"},
        metadata={
            metadata_key("robot_id"): spec.robot_id,
            metadata_key("budget"): spec.budget or 0,
        },
    )
    def _run(
        context: dg.AssetExecutionContext, config: ExtraltRunConfig, extralt: ExtraltResource
    ) -> dg.MaterializeResult:
        return _RunStep(context, config, extralt, spec, accept_stopped, location_cap).execute()

    return _run


class _RunStep:
    """One attempt of a `run` asset: pick the Extralt run to follow, follow it, report it."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        config: ExtraltRunConfig,
        extralt: ExtraltResource,
        spec: SourceSpec,
        accept_stopped: bool,
        location_cap: credits.LocationCap | None = None,
    ) -> None:
        self.context = context
        self.location_cap = location_cap
        self.extralt = extralt
        self.spec = _configured(spec, config)
        self.accept_stopped = (
            config.accept_stopped if config.accept_stopped is not None else accept_stopped
        )
        self.settings = extralt.poll_settings(self.spec.poll_timeout_seconds)
        self.client = extralt.get_client()

    # --- choosing the run -------------------------------------------------------------

    def execute(self) -> dg.MaterializeResult:
        try:
            handler, how = self._follow()
        except CreditLimitReached:
            raise  # nothing was created or restarted; a recorded run is left as it is
        except Exception:
            # E.g. the last attempt cannot even read the run an earlier attempt left running.
            recorded = self._recorded(run_id_tag(self.spec.name))
            if recorded:
                self._on_unexpected_failure(self._handler(recorded))
            raise
        try:
            final = handler.wait(self.settings)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            if self.extralt.stop_on_termination:
                self.context.log.warning(
                    f"Dagster run terminated; stopping Extralt run {handler.run_id}"
                )
                handler.stop(self.extralt.stop_timeout_seconds)
            raise
        except ExtraltTimeoutError as exc:
            raise dg.Failure(
                description=str(exc), metadata=self._failure_metadata(handler), allow_retries=False
            ) from None
        except Exception:
            self._on_unexpected_failure(handler)
            raise
        return self._finish(handler, final, how)

    def _follow(self) -> tuple[ExtraltRunHandler, str]:
        recorded = self._recorded(run_id_tag(self.spec.name))
        if recorded:
            followed = self._resume(recorded)
            if followed is not None:
                return followed
        sent_at = self._recorded(create_sent_tag(self.spec.name))
        if sent_at and not recorded:
            adopted = self.client.find_started_run(
                self.spec.robot_id,
                self.spec.budget,
                self.spec.start_urls,
                since=float(sent_at),
                exclude=self._known_runs(),
            )
            if adopted:
                self.context.log.warning(
                    f"A previous attempt's create request timed out after reaching Extralt; "
                    f"adopting run {adopted} instead of starting a second one."
                )
                self._record(adopted)
                return self._handler(adopted), "adopted"
        return self._create(), "created"

    def _resume(self, run_id: str) -> tuple[ExtraltRunHandler, str] | None:
        try:
            run = self.client.get_run(run_id)
        except ExtraltNotFoundError:
            self.context.log.warning(
                f"Recorded Extralt run {run_id} no longer exists; starting a new run."
            )
            return None
        if run.status.is_live:
            self.context.log.info(
                f"Resuming Extralt run {run_id} ({run.status.value}) recorded by an earlier "
                "attempt; no new run is created."
            )
            return self._handler(run_id), "resumed"
        if run.status in (RunStatus.FAILED, RunStatus.STOPPED):
            self._guard_credits("restart", run_id)  # a restart crawls, and pays, again
            new_id = self.client.restart_run(run_id, budget=self.spec.budget)
            self._record(new_id)
            self.context.log.info(
                f"Restarted Extralt run {run_id} ({run.status.value}) as {new_id} "
                f"instead of creating a new run: {self.client.dashboard_url(new_id)}"
            )
            return self._handler(new_id), "restarted"
        if self._already_materialized(run_id):
            return None  # a deliberate re-run of a finished materialization: extract afresh
        self.context.log.info(f"Extralt run {run_id} already completed; materializing it.")
        return self._handler(run_id), "reused"

    def _create(self) -> ExtraltRunHandler:
        p = self.spec
        self._guard_credits("start")
        known = self._known_runs()
        self._add_tags({create_sent_tag(self.spec.name): f"{time.time():.3f}"})
        try:
            run_id = self.client.create_run(
                p.robot_id, p.start_urls, p.budget, p.auto_enrich, exclude_run_ids=known
            )
        except ExtraltError as exc:
            # No run id to name yet: name the robot, and say what the next attempt will do.
            exc.add_note(
                f"While starting an Extralt run of robot {p.robot_id} for source "
                f"{self.spec.name!r}: no run is recorded, so a retry looks for one this "
                "request may have started before it creates another."
            )
            raise
        self._record(run_id)
        self.context.log.info(
            f"Started Extralt run {run_id} for robot {p.robot_id}: "
            f"{self.client.dashboard_url(run_id)}"
        )
        return self._handler(run_id)

    def _period(self) -> credits.Period:
        """The cap's calendar period now (a month when the source has no cap)."""
        limit = self.spec.credit_limit
        per = limit.per if limit else "month"
        return credits.Period.containing(
            per, self.spec.timezone or DEFAULT_TIMEZONE, credits.wall_clock()
        )

    def _spend(self, known: dict[str, int] | None = None) -> credits.Spend:
        return credits.spent_in_period(
            self.context.instance,
            self.spec.name,
            self._period(),
            worst_case_credits=credits.worst_case(self.spec.budget or 0),
            known=known,
            current_dagster_run=self.context.run.run_id,
        )

    def _location_period(self) -> credits.Period:
        assert self.location_cap is not None
        cap = self.location_cap
        return credits.Period.containing(cap.limit.per, cap.timezone, credits.wall_clock())

    def _location_spend(self, known: dict[str, int] | None = None) -> credits.Spend:
        assert self.location_cap is not None
        return self.location_cap.spent(
            self.context.instance,
            self._location_period(),
            self.context.run.run_id,
            known={self.spec.name: known or {}},
        )

    def _guard_credits(self, action: str, run_id: str | None = None) -> None:
        """Refuse, before the request, a run that could take the source, or its code location,
        past its cap."""
        if not self.spec.budget:
            return
        limit = self.spec.credit_limit
        if limit is not None:
            self._refuse_past(limit, self._period(), self._spend(), action, run_id)
        if self.location_cap is not None:
            self._refuse_past(
                self.location_cap.limit,
                self._location_period(),
                self._location_spend(),
                action,
                run_id,
                shared_by=len(self.location_cap.budgets),
            )

    def _refuse_past(
        self,
        limit: CreditLimit,
        period: credits.Period,
        spend: credits.Spend,
        action: str,
        run_id: str | None,
        *,
        shared_by: int | None = None,
    ) -> None:
        assert self.spec.budget
        message = credits.refusal(
            self.spec.name,
            limit,
            period,
            spend,
            self.spec.budget,
            action,
            self.spec.robot_id,
            run_id,
            shared_by=shared_by,
        )
        if message is None:
            return
        prefix = "" if shared_by is None else "location_"
        raise CreditLimitReached(
            description=message,
            metadata={
                metadata_key(f"{prefix}credit_limit"): limit.credits,
                metadata_key(f"{prefix}credits_in_period"): spend.credits,
                metadata_key(f"{prefix}credit_period"): period.describe(),
                metadata_key("refused"): action,
            },
            allow_retries=False,
        )

    def _known_runs(self) -> set[str]:
        """Every Extralt run this source has recorded, in any Dagster run, restarted ones too:
        never mistaken for a run that an ambiguous create has just started."""
        tags = self.context.instance.get_run_tags(tag_keys=[run_ids_tag(self.spec.name)])
        return {run_id for _, values in tags for value in values for run_id in value.split(",")}

    def _already_materialized(self, run_id: str) -> bool:
        return latest_materialized_run_id(self.context.instance, self.spec.name) == run_id

    # --- finishing --------------------------------------------------------------------

    def _finish(
        self, handler: ExtraltRunHandler, run: ExtraltRun, how: str
    ) -> dg.MaterializeResult:
        metadata = self._run_metadata(run, how, handler)
        if run.status is RunStatus.FAILED:
            reason = run.error_message or "no reason given"
            raise dg.Failure(
                description=(
                    f"Extralt run {run.id} failed: {reason}. {run.extracted} captures were "
                    f"extracted. See {handler.dashboard_url}. Re-executing this step restarts it."
                ),
                metadata=metadata,
                allow_retries=False,
            )
        if run.status is RunStatus.STOPPED and not self.accept_stopped:
            raise dg.Failure(
                description=(
                    f"Extralt run {run.id} was stopped outside Dagster after {run.extracted} "
                    f"captures. See {handler.dashboard_url}. Set accept_stopped to load the "
                    "partial run, or re-execute to restart it."
                ),
                metadata=metadata,
                allow_retries=False,
            )
        self.context.log.info(
            f"Extralt run {run.id} {run.status.value}: {run.extracted} captures, "
            f"{run.credits_spent} credits"
        )
        return dg.MaterializeResult(metadata=metadata)

    def _on_unexpected_failure(self, handler: ExtraltRunHandler) -> None:
        """Don't leave a run crawling that no retry will come back for."""
        policy = self.context.op_def.retry_policy
        retries_left = policy is not None and self.context.retry_number < policy.max_retries
        if retries_left:
            self.context.log.warning(
                f"Leaving Extralt run {handler.run_id} running: the step's retry will resume it."
            )
        elif self.extralt.stop_on_termination:
            self.context.log.warning(
                f"Stopping Extralt run {handler.run_id}: this step failed and no retry is left. "
                "Re-executing it restarts the run."
            )
            handler.stop(self.extralt.stop_timeout_seconds)

    def _run_metadata(
        self, run: ExtraltRun, how: str, handler: ExtraltRunHandler
    ) -> dict[str, Any]:
        metadata = RunMaterialization(
            run=run,
            how=how,
            dashboard_url=handler.dashboard_url,
            polls=handler.polls,
            robot_id=run.robot_id or self.spec.robot_id,
            budget=run.budget if run.budget is not None else self.spec.budget,
        ).to_metadata()
        # The period's running total, this run included at its real cost: plotted by the UI.
        period = self._period()
        spend = self._spend(known={run.id: run.credits_spent})
        metadata[metadata_key("credits_in_period")] = spend.credits
        metadata[metadata_key("credit_period")] = period.describe()
        if self.spec.credit_limit is not None:
            metadata[metadata_key("credit_limit")] = self.spec.credit_limit.credits
        if self.location_cap is not None:  # this run is in its events: count it as known
            location = self._location_spend(known={run.id: run.credits_spent})
            metadata[metadata_key("location_credits_in_period")] = location.credits
            metadata[metadata_key("location_credit_period")] = self._location_period().describe()
            metadata[metadata_key("location_credit_limit")] = self.location_cap.limit.credits
        return metadata

    def _failure_metadata(self, handler: ExtraltRunHandler) -> dict[str, Any]:
        return run_failure_metadata(handler.run_id, handler.dashboard_url)

    # --- tags -------------------------------------------------------------------------

    def _recorded(self, key: str) -> str | None:
        """A tag of this run, else of the nearest ancestor run (re-executions and retries).

        The UI copies a parent's tags into a re-execution, but `dg.execute_job` does not, so the
        parent chain is the reliable record of which Extralt run this materialization owns.
        """
        run_id: str | None = self.context.run.run_id
        for _ in range(100):  # a re-execution chain is short; never loop forever
            if run_id is None:
                return None
            run = self.context.instance.get_run_by_id(run_id)
            if run is None:
                return None
            if key in run.tags:
                return run.tags[key]
            run_id = run.parent_run_id
        return None

    def _add_tags(self, tags: Mapping[str, str]) -> None:
        self.context.instance.add_run_tags(self.context.run.run_id, dict(tags))

    def _record(self, run_id: str) -> None:
        current = self.context.instance.get_run_by_id(self.context.run.run_id)
        followed = (current.tags if current else {}).get(run_ids_tag(self.spec.name), "")
        ids = [i for i in followed.split(",") if i]
        if run_id not in ids:
            ids.append(run_id)
        self._add_tags(
            {run_id_tag(self.spec.name): run_id, run_ids_tag(self.spec.name): ",".join(ids)}
        )

    def _handler(self, run_id: str) -> ExtraltRunHandler:
        return ExtraltRunHandler(self.client, run_id, log=self.context.log)


def _configured(spec: SourceSpec, config: ExtraltRunConfig) -> SourceSpec:
    """The spec this run follows: the run config's overrides, checked, as a new spec."""
    changes = {
        "robot_id": config.robot_id,
        "start_urls": config.start_urls,
        "budget": config.budget,
        "auto_enrich": config.auto_enrich,
        # 0, like unset, keeps the source's own timeout.
        "poll_timeout_seconds": config.poll_timeout_seconds or None,
    }
    try:
        return spec.overridden(
            {k: v for k, v in changes.items() if v is not None}, prefix="config."
        )
    except ExtraltValidationError as exc:
        raise _config_failure(str(exc)) from None


def _config_failure(message: str) -> dg.Failure:
    return dg.Failure(
        description=f"Invalid run config: {message} No Extralt request was made.",
        allow_retries=False,
    )


__all__ = [
    "ExtraltRunConfig",
    "build_extralt_assets",
    "captures_asset_key",
    "run_asset_key",
]
