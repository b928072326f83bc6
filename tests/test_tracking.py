"""The harness's MLflow experiments, as `mlflow ui` shows them."""

from __future__ import annotations


def test_experiments_say_they_hold_model_training(tmp_path):
    """MLflow 3 opens an experiment on its GenAI overview unless it is tagged as model training: every
    experiment the harness makes (or reopens) carries the tag, so `mlflow ui` lands on the runs table."""
    from mlflow.tracking import MlflowClient

    from bench.spine.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri, "made-here")
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("made-before", artifact_location=(tmp_path / "mlruns").as_uri())
    assert EXPERIMENT_KIND_TAG not in client.get_experiment_by_name("made-before").tags
    Tracker(uri, "made-before")
    for name in ("made-here", "made-before"):
        assert client.get_experiment_by_name(name).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_the_runs_link_opens_the_model_training_view():
    """MLflow 3.17's UI follows one GenAI / Model-training switch; the link sets it (checked in headless Chromium)."""
    from bench.spine.tracking import runs_url

    assert runs_url("7") == "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
    assert runs_url("7", "http://host:5000/").startswith("http://host:5000/#/experiments/7?")
