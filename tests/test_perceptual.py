"""ST-LPIPS perceptual distance: zero on identical images, monotone in noise, differentiable, and equal to
an independent functional evaluation of the shipped weight file; a standard-LPIPS-layout file drops in."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from panolam.train.perceptual import Perceptual, stlpips_weight_path


def _images(seed: int = 0, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(2, 3, size // 8, size // 8, generator=g)
    return F.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


def _unit(f):
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)


def _functional_st_alex(sd, a, b):
    """Shift-tolerant AlexNet LPIPS written directly against the state-dict tensors."""
    def blur(x, filt):
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), filt, stride=2, groups=x.shape[1])

    def feats(x):
        x = (2 * x - 1 - sd["scaling_layer.shift"]) / sd["scaling_layer.scale"]
        h1 = F.relu(blur(F.conv2d(x, sd["net.slice1.0.weight"], sd["net.slice1.0.bias"], padding=2), sd["net.slice1.1.filt"]))
        h = blur(F.max_pool2d(h1, 3, 1), sd["net.slice2.4.filt"])
        h2 = F.relu(F.conv2d(h, sd["net.slice2.5.weight"], sd["net.slice2.5.bias"], padding=2))
        h = blur(F.max_pool2d(h2, 3, 1), sd["net.slice3.8.filt"])
        h3 = F.relu(F.conv2d(h, sd["net.slice3.9.weight"], sd["net.slice3.9.bias"], padding=1))
        h4 = F.relu(F.conv2d(h3, sd["net.slice4.11.weight"], sd["net.slice4.11.bias"], padding=1))
        h5 = F.relu(F.conv2d(h4, sd["net.slice5.13.weight"], sd["net.slice5.13.bias"], padding=1))
        return [h1, h2, h3, h4, h5]

    fa, fb = feats(a), feats(b)
    return sum(F.conv2d((_unit(x) - _unit(y)) ** 2, sd[f"lin{i}.model.1.weight"]).mean((1, 2, 3)) for i, (x, y) in enumerate(zip(fa, fb)))


def test_identical_is_zero_and_noise_is_monotone():
    p = Perceptual()
    a = _images()
    assert torch.allclose(p(a, a), torch.zeros(2), atol=1e-7)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(a.shape, generator=g)
    d = [p(a, (a + s * noise).clamp(0, 1)).mean().item() for s in (0.02, 0.08, 0.3)]
    assert 0 < d[0] < d[1] < d[2], d


def test_gradients_flow_to_input_not_weights():
    p = Perceptual(net="vgg")
    a = _images().requires_grad_(True)
    b = _images(seed=3)
    p(a, b).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert all(not q.requires_grad for q in p.parameters())
    # identical inputs: finite (zero) gradient, no NaN from the normalisation
    c = b.clone().requires_grad_(True)
    p(c, b).sum().backward()
    assert torch.isfinite(c.grad).all()


def test_matches_independent_functional_evaluation():
    sd = torch.load(stlpips_weight_path("alex"), map_location="cpu", weights_only=True)
    a, b = _images(4, 64), _images(5, 64)
    ref = _functional_st_alex(sd, a, b)
    got = Perceptual(net="alex")(a, b)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-6), (got, ref)
    assert got.min() > 0.01  # different images give a clearly non-zero distance


def test_small_images_are_upsampled_and_bad_shapes_rejected():
    p = Perceptual()
    a, b = _images(size=16), _images(seed=2, size=16)
    assert p(a, b).shape == (2,)
    try:
        p(a, b[:, :2])
    except ValueError as e:
        assert "(B,3,H,W)" in str(e)
    else:
        raise AssertionError("shape mismatch accepted")


def test_standard_lpips_layout_file_drops_in(tmp_path):
    # A vanilla-AlexNet LPIPS state dict (lpips package layout, random values) loads and is used.
    g = torch.Generator().manual_seed(0)
    shapes = {"net.slice1.0": (64, 3, 11, 11), "net.slice2.3": (192, 64, 5, 5), "net.slice3.6": (384, 192, 3, 3),
              "net.slice4.8": (256, 384, 3, 3), "net.slice5.10": (256, 256, 3, 3)}
    sd = {}
    for name, shp in shapes.items():
        sd[f"{name}.weight"] = torch.randn(shp, generator=g) * 0.05
        sd[f"{name}.bias"] = torch.zeros(shp[0])
    for i, c in enumerate((64, 192, 384, 256, 256)):
        sd[f"lin{i}.model.1.weight"] = torch.rand(1, c, 1, 1, generator=g)
        sd[f"lins.{i}.model.1.weight"] = sd[f"lin{i}.model.1.weight"]
    path = tmp_path / "alex_lpips.pth"
    torch.save(sd, path)
    p = Perceptual(weights=str(path))
    assert p.kind == "alex" and not p.shift_tolerant
    a, b = _images(size=64), _images(seed=9, size=64)

    def feats(x):
        x = (2 * x - 1 - p.shift) / p.scale
        h1 = F.relu(F.conv2d(x, sd["net.slice1.0.weight"], stride=4, padding=2))
        h2 = F.relu(F.conv2d(F.max_pool2d(h1, 3, 2), sd["net.slice2.3.weight"], padding=2))
        h3 = F.relu(F.conv2d(F.max_pool2d(h2, 3, 2), sd["net.slice3.6.weight"], padding=1))
        h4 = F.relu(F.conv2d(h3, sd["net.slice4.8.weight"], padding=1))
        return [h1, h2, h3, h4, F.relu(F.conv2d(h4, sd["net.slice5.10.weight"], padding=1))]

    ref = sum(F.conv2d((_unit(x) - _unit(y)) ** 2, sd[f"lin{i}.model.1.weight"]).mean((1, 2, 3))
              for i, (x, y) in enumerate(zip(feats(a), feats(b))))
    assert torch.allclose(p(a, b), ref, rtol=1e-4, atol=1e-7)

    bad = tmp_path / "lin_only.pth"
    torch.save({k: v for k, v in sd.items() if k.startswith("lin")}, bad)
    try:
        Perceptual(weights=str(bad))
    except ValueError as e:
        assert "lin_only.pth" in str(e)
    else:
        raise AssertionError("lin-only file accepted")


def _trunk_by_plain_autograd(p: Perceptual, x: torch.Tensor) -> list[torch.Tensor]:
    """p.net's features with the stock ops (F.max_pool2d, F.pad + conv) instead of its lean-backward modules."""
    from panolam.model.cnn_trunk import BlurPool

    x = (2 * x - 1 - p.shift) / p.scale
    feats = []
    for k in range(1, p.net.num_slices + 1):
        for m in getattr(p.net, f"slice{k}"):
            if isinstance(m, torch.nn.MaxPool2d):
                x = F.max_pool2d(x, m.kernel_size, m.stride)
            elif isinstance(m, BlurPool):
                x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), m.filt, stride=2, groups=x.shape[1])
            else:
                x = m(x)
        feats.append(x)
    return feats


def test_lean_backward_matches_plain_autograd_and_keeps_no_index_or_padded_copies():
    # The trunk's max-pool (argmax recomputed in backward) and blur-pool (linear: no activation kept) give the
    # gradient autograd gives for the stock ops; the graph then holds no int64 tensor and nothing but float maps.
    p = Perceptual(net="vgg")
    a = _images(seed=6, size=64)
    g = torch.Generator().manual_seed(7)
    proj = [torch.randn(f.shape[1:], generator=g) for f in _trunk_by_plain_autograd(p, a)]
    grads = []
    for run in (lambda x: p.features(x), lambda x: _trunk_by_plain_autograd(p, x)):
        x = a.clone().requires_grad_(True)
        dtypes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: dtypes.append(t.dtype) or t, lambda t: t):
            feats = run(x)
        sum((f * w).sum() for f, w in zip(feats, proj)).backward()
        grads.append((x.grad, dtypes))
    (lean, lean_dtypes), (plain, plain_dtypes) = grads
    assert torch.allclose(lean, plain, rtol=1e-5, atol=1e-7 * float(plain.abs().max()))
    assert torch.int64 in plain_dtypes and torch.int64 not in lean_dtypes


def test_targets_without_gradient_and_precomputed_target_features_give_the_same_distance_and_gradient():
    # Distance and gradient w.r.t. the prediction agree with the independent functional ST-AlexNet evaluation
    # (trunk on both images in one batch, lin((ua - ub)^2)), whether the target goes in as images or as features.
    sd = torch.load(stlpips_weight_path("alex"), map_location="cpu", weights_only=True)
    p = Perceptual(net="alex")
    a, b = _images(4, 64), _images(5, 64)
    results = []
    for kind in ("ref", "images", "features"):
        x = a.clone().requires_grad_(True)
        if kind == "ref":
            d = _functional_st_alex(sd, x, b)
        elif kind == "images":
            d = p(x, b)
        else:
            d = p(x, target=p.target_features(b))
        d.sum().backward()
        results.append((d.detach(), x.grad))
    (ref_d, ref_g), *ours = results
    for d, grad in ours:
        assert torch.allclose(d, ref_d, rtol=1e-4, atol=1e-6), (d, ref_d)
        assert torch.allclose(grad, ref_g, rtol=1e-4, atol=1e-4 * float(ref_g.abs().max()))
    # a target that needs a gradient still gets one
    y = b.clone().requires_grad_(True)
    p(a, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
