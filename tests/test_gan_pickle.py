"""Safe loading of official EG3D-family pickles: state and kwargs rebuilt, no pickled code run."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from panolam.cli import main
from panolam.data.gan.pickle_io import (PersistentStub, UnsafePickleError, load_gan_checkpoint, load_official_pickle,
                                        restricted_load)

FIX = Path(__file__).parent / "fixtures" / "gan" / "eg3d_tiny"


@pytest.mark.parametrize("family", ["eg3d", "spherehead"])
def test_official_pickle_gives_the_state_dict_and_kwargs(family):
    fix = FIX.parent / f"{family}_tiny"
    ckpt = load_official_pickle(fix / "official.pkl")
    ref = load_file(str(fix / "weights.safetensors"))
    meta = json.loads((fix / "config.json").read_text())
    assert ckpt.class_name == "TriPlaneGenerator"
    assert set(ckpt.state_dict) == set(ref)
    for k, v in ref.items():
        assert torch.equal(ckpt.state_dict[k], v), k
    assert ckpt.init_kwargs == meta["init_kwargs"]


def test_convert_round_trip_through_cli(tmp_path):
    out = tmp_path / "g.safetensors"
    assert main(["data", "convert-gan", str(FIX / "official.pkl"), "-o", str(out)]) == 0
    back = load_gan_checkpoint(out)
    orig = load_official_pickle(FIX / "official.pkl")
    assert back.class_name == orig.class_name and back.init_kwargs == orig.init_kwargs
    assert all(torch.equal(back.state_dict[k], v) for k, v in orig.state_dict.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]  # no temporary left


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_reduce_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(UnsafePickleError, match="system"):
        load_official_pickle(bad)
    assert not marker.exists()
    # The CLI turns it into one clear error line and exit code 2.
    assert main(["data", "convert-gan", str(bad), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()


def test_malicious_payload_inside_tensor_storage_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    inner = pickle.dumps(_Evil(marker), protocol=2)
    # torch.storage._load_from_bytes(inner): a normal unpickler would torch.load it with weights_only=False.
    data = b"\x80\x02ctorch.storage\n_load_from_bytes\nC" + bytes([len(inner)]) + inner + b"\x85R."
    assert len(inner) < 256
    with pytest.raises(UnsafePickleError):
        restricted_load(io.BytesIO(data))
    assert not marker.exists()


def test_persistence_source_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    meta = {"type": "class", "version": 4, "class_name": "Net", "module_src": f"open({str(marker)!r}, 'w').write('x')\n",
            "state": {"_parameters": {"w": torch.ones(2)}, "_buffers": {}, "_modules": {}}}
    body = pickle.dumps(meta, protocol=2)[2:-1]  # drop PROTO and STOP
    data = b"\x80\x02ctorch_utils.persistence\n_reconstruct_persistent_obj\n" + body + b"\x85R."
    obj = restricted_load(io.BytesIO(data))
    assert isinstance(obj, PersistentStub) and obj.class_name == "Net"
    assert torch.equal(obj.state["_parameters"]["w"], torch.ones(2))
    assert not marker.exists()


def test_other_files_are_refused_with_a_clear_message(tmp_path):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="convert-gan"):
        load_gan_checkpoint(junk)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"something": 1}))
    with pytest.raises(UnsafePickleError, match="G_ema"):
        load_official_pickle(plain)
