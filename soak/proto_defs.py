import os
import dagster as dg
from dagster_duckdb import DuckDBResource
from extralt_dagster import ExtraltResource, build_extralt_assets

SOURCES = [("shoes", "rbt_shoes"), ("outdoor", "rbt_outdoor"), ("books", "rbt_books"), ("toys", "rbt_shoes"), ("garden", "rbt_books")]
assets = [a for n, r in SOURCES for a in build_extralt_assets(n, r, budget=20, export_dir=os.environ["SOAK_EXPORT_DIR"])]
START = os.environ.get("SOAK_START", "spawn")
ex = dg.multiprocess_executor.configured({"max_concurrent": 2, "start_method": {START: {}}})
defs = dg.Definitions(assets=assets, jobs=[dg.define_asset_job("soak", executor_def=ex)], resources={
    "extralt": ExtraltResource(api_key=dg.EnvVar("EXTRALT_API_KEY"), base_url=os.environ["EXTRALT_BASE_URL"], poll_interval_seconds=0.2, initial_poll_interval_seconds=0.05),
    "duckdb": DuckDBResource(database=os.environ["SOAK_DUCKDB_PATH"])})

def soak_job():
    return defs.resolve_job_def("soak")

JOB = defs.resolve_job_def("soak")
def soak_job():
    return JOB
