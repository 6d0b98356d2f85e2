"""Model loading refuses anything but skops with the allow-list held in code (issue 16, item 6)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from cdp.training.tracking import UnsafeModel, load_model_uri


class _Payload:
    """Unpickling this creates `marker`: stands in for an attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def _saved_model(tmp_path: Path, model, extra_trusted: tuple[str, ...] = ()) -> Path:
    import mlflow.sklearn

    from cdp.training.tracking import SKOPS_TRUSTED

    path = tmp_path / "model"
    trusted = [*SKOPS_TRUSTED, *extra_trusted]
    mlflow.sklearn.save_model(model, str(path), serialization_format="skops", skops_trusted_types=trusted)
    return path


def _edit_flavor(path: Path, **changes) -> None:
    mlmodel = path / "MLmodel"
    spec = yaml.safe_load(mlmodel.read_text())
    spec["flavors"]["sklearn"].update(changes)
    mlmodel.write_text(yaml.safe_dump(spec))


@pytest.fixture()
def lgbm():
    from lightgbm import LGBMClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    return LGBMClassifier(n_estimators=5, verbose=-1).fit(x, (x[:, 0] > 0).astype(int)), x


def test_skops_model_loads(tmp_path, lgbm):
    model, x = lgbm
    loaded = load_model_uri(str(_saved_model(tmp_path, model)))
    assert np.allclose(loaded.predict_proba(x), model.predict_proba(x))


def test_tampered_cloudpickle_model_is_refused_without_running_it(tmp_path, lgbm):
    import mlflow.sklearn

    path = _saved_model(tmp_path, lgbm[0])
    marker = tmp_path / "payload-ran"
    (path / "model.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    _edit_flavor(path, serialization_format="cloudpickle", pickled_model="model.pkl")
    with pytest.raises(UnsafeModel, match="cloudpickle"):
        load_model_uri(str(path))
    assert not marker.exists()
    # the payload is real: MLflow's own loader runs it
    mlflow.sklearn.load_model(str(path))
    assert marker.exists()


def test_allow_list_in_the_artifact_is_ignored(tmp_path):
    """A skops file holding an untrusted callable, with the artifact's allow-list widened to it."""
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    path = _saved_model(tmp_path, FunctionTransformer(func=os.system), extra_trusted=("posix.system",))
    assert "posix.system" in skops.io.get_untrusted_types(file=path / "model.skops")
    with pytest.raises(UnsafeModel, match="allow-list held in code"):
        load_model_uri(str(path))


def test_other_flavours_are_refused(tmp_path, lgbm):
    path = _saved_model(tmp_path, lgbm[0])
    spec = yaml.safe_load((path / "MLmodel").read_text())
    spec["flavors"] = {"python_function": spec["flavors"]["python_function"]}
    (path / "MLmodel").write_text(yaml.safe_dump(spec))
    with pytest.raises(UnsafeModel, match="only sklearn"):
        load_model_uri(str(path))
