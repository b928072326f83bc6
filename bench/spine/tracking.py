"""MLflow tracking for ``bench.ablate``: one parent run per invocation, one child run per variant and seed.

Everything goes through an explicit ``MlflowClient`` (no global active run), to a local store by
default: ``sqlite:///mlflow.db`` in the working directory, with artifacts under ``./mlruns``, which is
what ``mlflow ui`` started in the project folder with no arguments shows. MLflow's telemetry is
switched off before MLflow is imported: nothing here makes a network call unless ``--tracking-uri``
names a server.

A child run carries the tag ``run_hash``, the identity of what it trained (model, training and data
configs plus the data fingerprint); a FINISHED child with the same hash is reused instead of trained.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mlflow

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# MLflow itself is imported where a Tracker is made, so that the names here (metric_key, NullTracker) work
# on machines without MLflow (a lent GPU machine running a study with --tracking-uri none)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "risclip-ladder"


def metric_key(name: str) -> str:
    """MLflow's spelling of a metric name: ``P@50`` -> ``P_at_50`` (MLflow refuses ``@``). The one place
    names are escaped; readers use it too."""
    return name.replace("@", "_at_")


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"tag values with quotes cannot be searched: {value!r}")
    return f"'{value}'"


def _retry(fn, *args, attempts: int = 8, **kwargs):
    """Call an MLflow client method, retrying while an SQLite store is locked by another process (several
    workers logging to one mlflow.db at once); other errors pass through at once."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # MLflow wraps SQLAlchemy's OperationalError in its own exceptions
            if "locked" not in str(e).lower() or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(2.0, delay * 2)
    return None


def git_revision(cwd: str | Path | None = None) -> str:
    """The current commit (with ``-dirty`` when the tree has changes), or ``unknown`` outside git."""
    cwd = cwd or Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dicts -> ``{"model.adapter_dim": "32", ...}`` (MLflow params are strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


class _Ending:
    """``ending``, for any tracker whose ``end`` records a status."""

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def ending(self, run_id: str):
        """End ``run_id`` FINISHED when the block completes, KILLED on Ctrl-C, FAILED on any other error
        (which propagates)."""
        try:
            yield
        except KeyboardInterrupt:
            self.end(run_id, "KILLED")
            raise
        except BaseException:
            self.end(run_id, "FAILED")
            raise
        self.end(run_id, "FINISHED")


# MLflow 3 opens an experiment on its GenAI overview ("Traces: 0"). The experiment tag says it holds model
# training (the tag older MLflow 3 UIs read to choose the view); MLflow 3.17's UI instead follows one switch for
# the whole browser (GenAI | Model training), which a link sets with ``workflowType=machine_learning``
# (checked in headless Chromium against `mlflow ui` 3.17.2: without it the experiment opens on the GenAI overview,
# with it on the runs table). :func:`runs_url` is that link.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
UI_DEFAULT = "http://127.0.0.1:5000"  # where `mlflow ui` serves without arguments


def runs_url(experiment_id: str, base: str = UI_DEFAULT) -> str:
    """The MLflow UI page of an experiment's runs table (the model-training view, not the GenAI overview)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


class Tracker(_Ending):
    """A thin layer over ``MlflowClient`` with the calls the harness needs."""

    def __init__(self, tracking_uri: str = DEFAULT_TRACKING_URI, experiment: str = DEFAULT_EXPERIMENT) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if tracking_uri.startswith("sqlite:///"):
                # keep artifacts beside the database, as `mlflow ui` in that folder expects
                db = Path(tracking_uri[len("sqlite:///"):])
                artifact_location = (db.parent.resolve() / "mlruns").as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location,
                                                               tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        else:
            self.experiment_id = exp.experiment_id
            if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:  # experiments made before the tag existed
                _retry(self.client.set_experiment_tag, self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)

    # ------------------------------------------------------------------------------------------ runs
    def start(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        tags = dict(tags)
        if parent_id is not None:
            tags["mlflow.parentRunId"] = parent_id
        run = _retry(self.client.create_run, self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        _retry(self.client.set_terminated, run_id, status=status)

    # --------------------------------------------------------------------------------------- queries
    def get_run(self, run_id: str) -> mlflow.entities.Run:
        return _retry(self.client.get_run, run_id)

    def runs(self, tags: dict[str, str] | None = None, status: str | None = "FINISHED", parent_id: str | None = None,
             newest_first: bool = True, limit: int = 5000) -> list[mlflow.entities.Run]:
        """Runs of this experiment whose tags equal ``tags``, in ``status`` (None: any), under ``parent_id``."""
        clauses = [f"tags.{k} = {_quote(str(v))}" for k, v in (tags or {}).items()]
        if status is not None:
            clauses.append(f"attributes.status = {_quote(status)}")
        if parent_id is not None:
            clauses.append(f"tags.mlflow.parentRunId = {_quote(parent_id)}")
        order = ["attributes.start_time DESC" if newest_first else "attributes.start_time ASC"]
        return _retry(self.client.search_runs, [self.experiment_id], filter_string=" and ".join(clauses),
                      order_by=order, max_results=limit)

    def find_finished(self, run_hash: str) -> mlflow.entities.Run | None:
        """The newest FINISHED run with this run-identity hash, if any (what reuse looks for)."""
        found = self.runs({"run_hash": run_hash}, limit=1)
        return found[0] if found else None

    def finished_children(self, tag: str, value: str) -> list[mlflow.entities.Run]:
        return self.runs({tag: value})

    # --------------------------------------------------------------------------------------- logging
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            _retry(self.client.log_batch, run_id, params=items[i:i + 100])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        _retry(self.client.log_batch, run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            _retry(self.client.log_batch, run_id, metrics=items[i:i + 500])

    def log_json(self, run_id: str, obj: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
            _retry(self.client.log_artifact, run_id, str(p))

    def log_file(self, run_id: str, path: str | Path) -> None:
        _retry(self.client.log_artifact, run_id, str(path))

    def download(self, run_id: str, name: str, dst: str | Path) -> Path:
        """Copy one artifact of a run to the folder ``dst``; returns its local path."""
        import mlflow

        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=str(dst),
                                                        tracking_uri=self.uri))

    def load_json(self, run_id: str, name: str) -> Any:
        import mlflow

        with tempfile.TemporaryDirectory() as d:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=d,
                                                        tracking_uri=self.uri)
            return json.loads(Path(local).read_text())


class NullTracker:
    """What processes other than 0 use under torchrun: the same calls, nothing written (process 0 tracks)."""

    uri = ""

    def runs(self, *args, **kwargs) -> list:
        return []

    def get_run(self, run_id: str):
        raise LookupError("no tracking store (--tracking-uri none): runs are not kept")

    def start(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        return ""

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        pass

    @contextlib.contextmanager
    def ending(self, run_id: str):
        yield

    def find_finished(self, run_hash: str) -> None:
        return None

    def load_json(self, run_id: str, name: str):
        raise LookupError("no tracking store (--tracking-uri none)")

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        pass

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        pass

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        pass

    def log_json(self, run_id: str, obj: Any, name: str) -> None:
        pass

    def log_file(self, run_id: str, path: str | Path) -> None:
        pass


class MemoryTracker(_Ending, NullTracker):
    """``--tracking-uri none`` in ``bench.ablate``: runs kept in memory for this invocation only (the table and
    ``--output`` rows are made from them), nothing written, MLflow never imported. For a machine without
    MLflow, such as a lent GPU machine; reuse across invocations needs a store, resuming from ``--workdir``
    checkpoints does not."""

    uri = "none"

    def __init__(self) -> None:
        from types import SimpleNamespace

        self._ns = SimpleNamespace
        self._runs: dict[str, Any] = {}

    def start(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        run_id = f"memory-{len(self._runs)}"
        tags = {k: str(v) for k, v in tags.items()}
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        self._runs[run_id] = self._ns(info=self._ns(run_id=run_id, run_name=name, status="RUNNING"),
                                      data=self._ns(tags=tags, params={}, metrics={}), artifacts={})
        return run_id

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        if run_id in self._runs:
            self._runs[run_id].info.status = status

    def get_run(self, run_id: str):
        if run_id not in self._runs:
            raise LookupError(f"no run {run_id} in this invocation (--tracking-uri none keeps nothing across runs)")
        return self._runs[run_id]

    def runs(self, tags: dict[str, str] | None = None, status: str | None = "FINISHED", parent_id: str | None = None,
             newest_first: bool = True, limit: int = 5000) -> list:
        out = [r for r in self._runs.values()
               if all(r.data.tags.get(k) == str(v) for k, v in (tags or {}).items())
               and (status is None or r.info.status == status)
               and (parent_id is None or r.data.tags.get("mlflow.parentRunId") == parent_id)]
        return (out[::-1] if newest_first else out)[:limit]

    def find_finished(self, run_hash: str):
        found = self.runs({"run_hash": run_hash}, limit=1)
        return found[0] if found else None

    def finished_children(self, tag: str, value: str) -> list:
        return self.runs({tag: value})

    def load_json(self, run_id: str, name: str):
        art = self.get_run(run_id).artifacts
        if name not in art:
            raise LookupError(f"run {run_id} has no {name}")
        return art[name]

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self.get_run(run_id).data.params.update(flatten(params))

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.get_run(run_id).data.tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self.get_run(run_id).data.metrics.update({metric_key(k): float(v) for k, v in metrics.items()})

    def log_json(self, run_id: str, obj: Any, name: str) -> None:
        self.get_run(run_id).artifacts[name] = json.loads(json.dumps(obj, default=str))


def open_tracker(uri: str, experiment: str):
    """The tracker a command's ``--tracking-uri`` names: ``none`` keeps runs in memory only, anything else is
    an MLflow store or server."""
    if uri.strip().lower() == "none":
        return MemoryTracker()
    return Tracker(uri, experiment)
