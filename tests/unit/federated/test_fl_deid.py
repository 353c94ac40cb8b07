"""Per-client de-identification hook: policy applied in original units, model input shape kept."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from torchshield.errors import InputError
from torchshield.federated.config import parse_config
from torchshield.federated.deid import deidentify_split
from torchshield.federated.task import build_task


def test_generalise_and_drop_keep_shape(tmp_path) -> None:
    task = build_task(parse_config({"clients": 2, "dataset": "breast_cancer"}))
    split = task.client_split(0)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"version": 1, "unlisted_columns": "keep", "columns": {
        "mean radius": {"operator": "generalize", "width": 5},
        "mean texture": {"operator": "suppress", "drop": True}}}))
    out = deidentify_split(split, task, policy=str(policy))
    assert out.x.shape == split.x.shape and np.array_equal(out.y.numpy(), split.y.numpy())
    names = list(task.data.feature_names)
    r, t = names.index("mean radius"), names.index("mean texture")
    shift, scale = (np.asarray(task.data.normalization[k]) for k in ("shift", "scale"))
    radius = out.x[:, r].numpy() * scale[r] + shift[r]
    assert set(np.round(radius, 3)) <= {7.0, 12.0, 17.0, 22.0, 27.0}  # midpoints of 5-wide ranges
    assert np.allclose(out.x[:, t].numpy(), 0.0, atol=1e-6)  # dropped -> the training mean
    others = [i for i in range(len(names)) if i not in (r, t)]
    assert np.allclose(out.x[:, others].numpy(), split.x[:, others].numpy(), atol=1e-4)


def test_policy_that_makes_text_is_refused(tmp_path) -> None:
    task = build_task(parse_config({"clients": 2, "dataset": "breast_cancer"}))
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"version": 1, "unlisted_columns": "keep",
                                      "columns": {"mean area": {"operator": "replace"}}}))
    with pytest.raises(InputError, match="'mean area' into text"):
        deidentify_split(task.client_split(1), task, policy=str(policy))
    digits = build_task(parse_config({"clients": 2}))
    with pytest.raises(InputError):  # the policy names a column digits does not have
        deidentify_split(digits.client_split(0), digits, policy=str(policy))
