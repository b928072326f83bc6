"""``python -m bench.predict``: :mod:`risclip.predict` with ``--run`` read through MLflow's own client, so a run
in the local store (``sqlite:///mlflow.db``) or on a tracking server is served by its id. The library reads
tracking servers over MLflow's REST API and never imports MLflow; this is the harness's side of the same
command, with the same arguments."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from risclip import predict as library


def checkpoint_of_run(run_id: str, tracking_uri: str = "sqlite:///mlflow.db", cache_dir: str | Path | None = None) -> Path:
    """A run's checkpoint: the file its ``checkpoint`` tag names when it is on this machine, else its ``model.pt``
    artifact, downloaded once into ``cache_dir/<run id>/`` (through a temporary folder: an interrupted download
    leaves nothing)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        raise library.PredictError(f"{tracking_uri[len('sqlite:///'):]}: no MLflow store here (run from the folder "
                                   f"that holds it, or pass --tracking-uri)")
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise library.PredictError(f"no MLflow run {run_id} in {tracking_uri}") from None
    tag = run.data.tags.get("checkpoint")
    if not tag:
        raise library.PredictError(f"MLflow run {run_id} has no checkpoint tag (baselines and runs older than predict "
                                   f"have none); pass --checkpoint runs/<hash>/model.pt")
    if Path(tag).is_file():
        return Path(tag)
    out = Path(cache_dir or Path.home() / ".cache" / "risclip") / run_id / "model.pt"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        try:
            got = client.download_artifacts(run_id, "model.pt", tmp)
        except (MlflowException, OSError):
            raise library.PredictError(f"MLflow run {run_id}'s checkpoint {tag} is gone (deleted, or another "
                                       f"machine's) and the run holds no model.pt artifact") from None
        shutil.move(got, out)
    return out


def main(argv: list[str] | None = None) -> int:
    return library.main(argv, resolve_run=checkpoint_of_run, prog="python -m bench.predict")
