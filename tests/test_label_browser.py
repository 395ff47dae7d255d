"""The labelling page in headless Debian Chromium: reject by key, accept by click, reload, loader skips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _browser import CHROMIUM, free_port, needs_chromium

from panolam.data.dataset import MultiViewDataset
from panolam.data.generators import Subject
from panolam.data.labels import read_labels
from panolam.data.synth import SynthSettings, generate_dataset

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]

pytestmark = [pytest.mark.browser, needs_chromium]


class SquareGenerator:
    id = "square"

    def subject(self, seed):
        return Subject(seed, {}, torch.tensor(np.random.default_rng(seed).random(3), dtype=torch.float32))

    def render(self, subject, cameras):
        n, h, w = len(cameras), cameras.height, cameras.width
        alpha = torch.zeros(n, h, w, 1)
        alpha[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
        return subject.payload * alpha, alpha


@pytest.fixture
def served(tmp_path):
    from panolam.data.label_app import launch

    generate_dataset(tmp_path, SquareGenerator(), SynthSettings(views=8, size=32, subjects_per_shard=2), n_train=3, progress=False)
    port = free_port()
    app = launch(tmp_path, labeller="tester", port=port, block=False)
    try:
        yield tmp_path, f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def test_reject_persists_across_reload_and_loader_skips(served):
    from playwright.sync_api import expect, sync_playwright

    root, url = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(url)
            expect(page.locator("#counts")).to_contain_text("3 subjects", timeout=30000)
            expect(page.locator("#selected")).to_contain_text("train-000000 — unlabelled")
            page.locator("#gallery button.thumbnail-item").nth(1).click()  # click the second sheet
            expect(page.locator("#selected")).to_contain_text("train-000001 — unlabelled")
            page.locator("body").click(position={"x": 5, "y": 5})
            page.keyboard.press("r")
            expect(page.locator("#counts")).to_contain_text("1 rejected")
            expect(page.locator("#selected")).to_contain_text("train-000002")  # moved on to the next subject
            page.locator("#accept-btn").click()
            expect(page.locator("#counts")).to_contain_text("1 accepted")

            page.reload()
            expect(page.locator("#counts")).to_contain_text("1 accepted · 1 rejected · 1 unlabelled", timeout=30000)
            page.get_by_label("rejected").check()
            expect(page.locator("#selected")).to_contain_text("train-000001 — rejected")
            expect(page.locator("#gallery")).to_contain_text("train-000001 · rejected")
            expect(page.locator("#gallery")).not_to_contain_text("train-000000")
        finally:
            browser.close()
    saved = json.loads((root / "labels" / "tester.json").read_text())
    assert saved["decisions"]["train-000001"]["decision"] == "reject"
    assert read_labels(root) == {"train-000001": "reject", "train-000002": "accept"}
    assert sorted(s["subject"] for s in MultiViewDataset(root, views_per_step=2, input_effects=False)) == ["train-000000", "train-000002"]
    assert len(list((root / ".cache" / "sheets").glob("*.png"))) == 3
