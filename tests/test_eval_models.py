"""Models under evaluation: references resolve through the studio's one resolver, and the
fingerprint names the exact weights (so cached per-item results are never reused for other weights)."""
import shutil

import pytest

from studio.evaluation.models import EndpointModel, LocalModel, open_model
from studio.models.embedded import ensure_embedded_model


def test_the_fingerprint_follows_the_weights_not_the_folder(tmp_path):
    tiny_folder = ensure_embedded_model("tiny")
    original = open_model("embedded")
    assert isinstance(original, LocalModel)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_folder, copy)
    assert open_model(str(copy)).fingerprint == original.fingerprint
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert open_model(str(copy)).fingerprint != original.fingerprint


def test_endpoints_name_their_server_and_cannot_give_log_likelihoods():
    a = open_model("endpoint:http://127.0.0.1:9/v1#one")
    b = open_model("endpoint:http://127.0.0.1:9/v1#two")
    assert isinstance(a, EndpointModel) and a.provider.model == "one"
    assert a.fingerprint != b.fingerprint
    assert not a.supports("loglikelihood") and a.supports("generate")


def test_a_missing_folder_is_a_clear_error(tmp_path):
    from studio.models.loading import ModelNotFound

    with pytest.raises(ModelNotFound, match="no model folder"):
        open_model(str(tmp_path / "nothing-here"))
