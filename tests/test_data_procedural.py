"""The procedural head generator and the ``panolam data`` commands on a tiny dataset."""

import numpy as np
import pytest
import torch

from panolam.cli import main
from panolam.data.generators import Generator, get_generator
from panolam.data.procedural import ProceduralHeads, quats_z_to
from panolam.geometry.cameras import Cameras


@pytest.fixture(scope="module")
def gen():
    return ProceduralHeads(template_vertices=1200, surface_points=3000, hair_points=2000)


def test_interface_and_registry(gen):
    assert isinstance(gen, Generator)
    assert get_generator("procedural").id == "procedural"
    with pytest.raises(ValueError, match="unknown generator"):
        get_generator("stylegan9")


def test_deterministic_per_seed_and_varied(gen):
    a, b, c = gen.subject(11), gen.subject(11), gen.subject(12)
    assert a.attributes == b.attributes
    assert torch.equal(a.payload.means, b.payload.means) and torch.equal(a.payload.colors, b.payload.colors)
    assert len(a.payload) != len(c.payload) or not torch.equal(a.payload.colors, c.payload.colors)
    styles = {gen.subject(s).attributes["hair_style"] for s in range(40)}
    assert {"bald", "short", "long"} <= styles


def test_long_hair_falls_well_away_from_the_template(gen):
    from panolam.data.procedural import _template

    verts = torch.from_numpy(_template(1200)[0]).float()
    seed = next(s for s in range(200) if gen.subject(s).attributes["hair_style"] == "long")
    g = gen.subject(seed).payload
    dist = torch.cdist(g.means, verts).min(dim=1).values
    assert dist.max() > 0.15  # strands hang far below/outside the template surface
    assert g.means[:, 1].min() < -0.35


def test_gaussians_valid_and_render_a_head(gen):
    sub = gen.subject(3)
    g = sub.payload
    assert torch.isfinite(g.means).all() and (g.scales > 0).all()
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(len(g)), atol=1e-5)
    assert g.colors.min() >= 0 and g.colors.max() <= 1
    cams = Cameras.orbit([0.0, 180.0], 0.0, 2.7, 18.83, 32)
    rgb, alpha = gen.render(sub, cams)
    assert rgb.shape == (2, 32, 32, 3) and alpha.shape == (2, 32, 32, 1)
    assert alpha[:, 16, 16, 0].min() > 0.9 and alpha[:, 0, 0, 0].max() < 0.05  # head centred, corners empty
    assert torch.all(rgb <= alpha + 1e-4)  # premultiplied


def test_quats_rotate_z_onto_direction():
    d = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=1).numpy()
    d[0] = [0, 0, -1]
    q = torch.from_numpy(quats_z_to(d))
    w, x, y, z = q.unbind(-1)
    # Third column of the rotation matrix = image of +z.
    col = torch.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], dim=-1)
    assert np.allclose(col.numpy(), d, atol=1e-6)


@pytest.mark.slow
def test_cli_synth_info_resume(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--subjects", "2", "--test-subjects", "1", "--views", "8", "--size", "32",
            "--subjects-per-shard", "2", "--no-progress"]
    assert main(args) == 0
    assert main(args) == 0
    assert "wrote 0 subjects, 3 already done" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train: 2/2 subjects" in text and "test: 1/1 subjects" in text and "360" in text
    assert main(["data", "synth", "--out", str(out), "--subjects", "2", "--shard", "3/2"]) == 2
    assert main(["data", "info", str(tmp_path / "nothing")]) == 2


def test_growing_a_dataset_refills_its_last_shard(tmp_path, capsys):
    out = tmp_path / "ds"
    base = ["data", "synth", "--out", str(out), "--views", "8", "--size", "24", "--subjects-per-shard", "2", "--no-progress"]
    assert main([*base, "--subjects", "3"]) == 0  # shards: [0, 1], [2]
    capsys.readouterr()
    assert main([*base, "--subjects", "4"]) == 0  # [0, 1] done; [2] must become [2, 3]
    assert "wrote 2 subjects, 2 already done" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0
    assert "train: 4/4 subjects" in capsys.readouterr().out
