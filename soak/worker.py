"""The Dagster side of the soak: a long-lived process that executes the runs it is asked for.

    python -m soak.worker   (started by soak.run_soak, with DAGSTER_HOME and the SOAK_* env)

One JSON line in on stdin per Dagster run: `{"tags", "assets", "run_config", "parent_run_id"}`;
one JSON line out: `{"run_id", "success", "status"}` (or `{"error"}`). A `parent_run_id` makes it a
re-execution from failure. It stays up across runs, so the multiprocess executor's forkserver
(with the code preloaded) is reused. The runner terminates a run the way Dagster's run launcher
does: it marks the run CANCELING and sends this process SIGINT.
"""

import json
import os
import signal
import sys
import traceback


def main() -> int:
    # Results go to the real stdout; anything else printing there goes to stderr (the log).
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # Outside a run an interrupt means nothing; inside one, Dagster installs its own handler.
    signal.signal(signal.SIGINT, lambda signum, frame: None)

    import dagster as dg

    from soak import defs

    job = dg.reconstructable(defs.soak_job)
    instance = dg.DagsterInstance.get()
    results.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        try:
            parent = spec.get("parent_run_id")
            options = dg.ReexecutionOptions.from_failure(parent, instance) if parent else None
            selection = (
                None
                if options
                else [dg.AssetKey.from_user_string(k) for k in spec.get("assets") or []] or None
            )
            with dg.execute_job(
                job,
                instance=instance,
                run_config=spec.get("run_config") or {},
                tags=spec.get("tags") or {},
                asset_selection=selection,
                reexecution_options=options,
            ) as result:
                run = instance.get_run_by_id(result.run_id)
                answer = {
                    "run_id": result.run_id,
                    "success": result.success,
                    "status": run.status.value if run else "UNKNOWN",
                }
        except BaseException:  # an interrupt outside the executor must still be answered
            answer = {"error": traceback.format_exc()}
        results.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
