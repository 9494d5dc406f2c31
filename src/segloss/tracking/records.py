"""What a run records: metrics, data sets, artifacts and the model (MLflow 3's pickle-free
``pt2`` format with its signature)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import DatasetInput, InputTag, Metric
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from torch import nn

from segloss.tracking.store import retry_locked, store_client

MODEL_PIP_REQUIREMENTS = ["torch", "segmentation-models-pytorch"]
CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}


def log_metrics(
    uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    step: int | None = None,
    *,
    model_id: str | None = None,
    dataset: Dataset | None = None,
) -> None:
    """Log metrics to an existing run (running or ended; its status is left as it was).

    ``model_id`` attaches them to a logged model (MLflow 3 shows them on the model's page),
    ``dataset`` to the data set they were measured on.
    """
    now = int(time.time() * 1000)
    name, digest = (dataset.name, dataset.digest) if dataset else (None, None)
    batch = [
        Metric(
            k, float(v), now, step or 0, model_id=model_id, dataset_name=name, dataset_digest=digest
        )
        for k, v in metrics.items()
    ]
    retry_locked(store_client(uri).log_batch, run_id, metrics=batch)


@dataclass(frozen=True)
class Dataset:
    """A data set as a run's input: ``table`` (one row per sample) is its profile and schema,
    ``digest`` identifies its content (the prepared data's hash), ``source`` where it lies."""

    name: str
    digest: str
    source: str
    table: pd.DataFrame
    context: str  # training | validation | testing (the UI's Dataset column shows it)


def split_dataset(
    manifest: pd.DataFrame,
    prepared: str | os.PathLike,
    meta: Mapping[str, object],
    split: str,
    patients: list[str],
    fold: int | None = None,
) -> Dataset:
    """One split as an MLflow data set: its slices (patient, slice, tumour_pixels) from the
    prepared folder's ``manifest``, the data's hash as digest, the ``prepared`` folder as
    source."""
    rows = manifest.query("patient in @patients")
    table = (
        rows[["patient", "slice", "tumour_pixels"]]
        .drop_duplicates(["patient", "slice"])
        .sort_values(["patient", "slice"])
        .reset_index(drop=True)
    )
    name = f"{meta.get('source', 'prepared')}-{split}" + ("" if fold is None else f"-fold{fold}")
    return Dataset(
        name=name,
        digest=str(meta.get("data_hash") or "unknown"),
        source=str(Path(prepared).resolve()),
        table=table,
        context=CONTEXTS.get(split, split),
    )


def splits_table(datasets: list[Dataset]) -> pd.DataFrame:
    """Per split and patient: slices and tumour pixels (the ``splits.csv`` run artifact)."""
    frames = [
        d.table.groupby("patient", as_index=False)
        .agg(slices=("slice", "size"), tumour_pixels=("tumour_pixels", "sum"))
        .assign(split=d.context)
        for d in datasets
    ]
    return pd.concat(frames, ignore_index=True)[["split", "patient", "slices", "tumour_pixels"]]


def log_datasets(uri: str, run_id: str, datasets: Iterable[Dataset]) -> None:
    """Record data sets as the run's inputs (``mlflow.log_input``), each with its context."""
    inputs = []
    for d in datasets:
        # Quiet MLflow's hints ("source can be interpreted in multiple ways", integer columns
        # in the schema): the source is a local folder, and the table has no missing values.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                d.table, source=d.source, name=d.name, digest=d.digest
            )
            entity = dataset._to_mlflow_entity()
        inputs.append(DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, d.context)]))
    retry_locked(store_client(uri).log_inputs, run_id, datasets=inputs)


def log_artifacts(
    uri: str, run_id: str, paths: Iterable[str | os.PathLike], artifact_path: str | None = None
) -> None:
    """Upload files or folders to an existing run (its status is left as it was)."""
    client = store_client(uri)
    for path in map(Path, paths):
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)


def image_signature(example: np.ndarray) -> ModelSignature:
    """Float32 images ``(batch, 3, H, W)`` in [0, 1] in, one logit ``(batch, 1, H, W)`` out;
    any batch size, the example's H and W (the size the model was trained at)."""
    _, channels, height, width = example.shape
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, height, width), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, height, width), "logit")]),
    )


def log_model(
    uri: str,
    run_id: str,
    model: nn.Module,
    input_example: np.ndarray,
    *,
    tags: Mapping[str, object] | None = None,
) -> str:
    """Log a model in MLflow 3's pickle-free PyTorch format; its logged-model id.

    ``serialization_format="pt2"``: the graph that ``torch.export`` traces from
    ``input_example`` (float32 ``(batch > 1, 3, H, W)``) and the weights, saved with
    ``torch.export.save``; ``mlflow.pytorch.load_model`` loads it without unpickling anything
    (MLflow checks the archive is pickle-free) and without this project's code. The signature
    (:func:`image_signature`) and the input example are stored with it. ``log_model`` needs the
    fluent active run, so the run is resumed for the call only and its RUNNING status is
    restored afterwards. Requirements are given explicitly so MLflow does not infer them.
    """
    mlflow.set_tracking_uri(uri)
    example = np.ascontiguousarray(input_example, dtype=np.float32)
    # torch.export.save warns "No complete tensor found in the group" for weights that share
    # storage (they are on the CPU, where that warning does not apply).
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
        info = mlflow.pytorch.log_model(
            model.eval(),
            name="model",
            signature=image_signature(example),
            input_example=example,
            pip_requirements=MODEL_PIP_REQUIREMENTS[:1],
            serialization_format="pt2",
            tags={k: str(v) for k, v in (tags or {}).items()},
            # MLflow would reload the model to serve the example as JSON lists, which the
            # PyTorch flavour does not accept (a warning and seconds lost): the round trip
            # is tested instead (tests/test_mlflow_models.py).
            validate_serving_input=False,
        )
    retry_locked(store_client(uri).update_run, run_id, status="RUNNING")
    return info.model_id


def logged_model_id(uri: str, run_id: str) -> str | None:
    """The id of the model logged by run ``run_id`` (None if it logged none)."""
    client = store_client(uri)
    run = retry_locked(client.get_run, run_id)
    found = retry_locked(
        client.search_logged_models,
        [run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
    )
    return found[0].model_id if found else None
