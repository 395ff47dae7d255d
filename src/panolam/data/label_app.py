"""The labelling web page (App. E): browse subjects as contact sheets and accept or reject them.

``panolam data label DIR`` serves a Gradio page on 127.0.0.1: the selected subject's contact
sheet (front/left/back/right: the stored views nearest those azimuths) with its status, buttons
and keys (``a`` accept, ``r`` reject, ``c`` clear, ``j``/→ next, ``k``/← previous), a filter
(all / unlabelled / rejected / accepted), counts and progress, and a paged gallery of the
filtered subjects (click one to select it). Sheets are made once per subject and cached as PNG
under ``DIR/.cache/sheets``. Every decision is written at once, atomically, to
``DIR/labels/<labeller>.json`` (see :mod:`panolam.data.labels`), so it survives a restart and the
loader skips rejected subjects. Gradio is imported only here, never at package import.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from panolam.data.labels import label_file, read_labels, set_label
from panolam.data.manifest import Manifest, load_manifest
from panolam.atomic import atomic_write_bytes

FILTERS = ("all", "unlabelled", "rejected", "accepted")
SHEET_AZIMUTHS = {"front": 0.0, "left": 90.0, "back": 180.0, "right": -90.0}
STATUS = {"accept": "accepted", "reject": "rejected"}
KEY_JS = """
() => {
  document.addEventListener('keydown', (e) => {
    const t = e.target && e.target.tagName;
    if (t === 'INPUT' || t === 'TEXTAREA' || e.ctrlKey || e.metaKey || e.altKey) return;
    const ids = {a: 'accept-btn', r: 'reject-btn', c: 'clear-btn', j: 'next-btn', ArrowRight: 'next-btn', k: 'prev-btn', ArrowLeft: 'prev-btn'};
    const id = ids[e.key];
    if (!id) return;
    const b = document.getElementById(id);
    if (b) { e.preventDefault(); b.click(); }
  });
}
"""


def sheet_dir(root: str | Path) -> Path:
    return Path(root) / ".cache" / "sheets"


def _sheet_views(labels: np.ndarray) -> list[int]:
    """Indices of the stored views nearest front/left/back/right in azimuth."""
    c2w = labels[:, :16].reshape(-1, 4, 4)
    centre = c2w[:, :3, 3]
    az = np.degrees(np.arctan2(centre[:, 0], centre[:, 2]))
    elev = np.degrees(np.arcsin(np.clip(centre[:, 1] / np.linalg.norm(centre, axis=1), -1, 1)))
    out = []
    for target in SHEET_AZIMUTHS.values():
        gap = np.abs((az - target + 180) % 360 - 180) + 0.5 * np.abs(elev)
        out.append(int(np.argmin(gap)))
    return out


def _sheet_png(rgb: np.ndarray, views: list[int], tile: int = 128) -> bytes:
    from PIL import Image

    tiles = [Image.fromarray(rgb[i]).resize((tile, tile), Image.BILINEAR) for i in views]
    sheet = Image.new("RGB", (tile * len(tiles), tile), (255, 255, 255))
    for k, t in enumerate(tiles):
        sheet.paste(t, (k * tile, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def ensure_sheets(manifest: Manifest, subjects: list[str]) -> dict[str, Path]:
    """Cached sheet paths for ``subjects``, rendering missing ones shard by shard (one pass per shard)."""
    from panolam.data.format import decode_npy, decode_record
    from panolam.data.shards import iter_raw_samples

    out = {s: sheet_dir(manifest.root) / f"{s}.png" for s in subjects}
    missing = {s for s, p in out.items() if not p.is_file()}
    for shard in manifest.shards:
        todo = missing & set(shard.subjects)
        if not todo:
            continue
        path = manifest.shard_path(shard)
        for raw in iter_raw_samples(path):
            if raw["__key__"] in todo:
                where = str(path)
                views = _sheet_views(decode_npy(raw["cameras.npy"], where))
                rec = decode_record(raw, where, views)
                atomic_write_bytes(out[rec.subject], _sheet_png(rec.rgb, list(range(len(views)))))
    return out


class LabelSession:
    """The page's logic without Gradio: filtering, paging, selection and decisions."""

    def __init__(self, root: str | Path, labeller: str = "default", page_size: int = 24) -> None:
        self.root, self.labeller, self.page_size = Path(root), labeller, page_size
        label_file(self.root, labeller)  # reject a bad labeller name before the page opens
        self.manifest = load_manifest(self.root)
        self.subjects = self.manifest.subjects()

    def status(self, subject: str, labels: dict[str, str] | None = None) -> str:
        labels = read_labels(self.root) if labels is None else labels
        return STATUS.get(labels.get(subject, ""), "unlabelled")

    def filtered(self, flt: str) -> list[str]:
        if flt not in FILTERS:
            raise ValueError(f"filter {flt!r} must be one of {', '.join(FILTERS)}")
        labels = read_labels(self.root)
        return [s for s in self.subjects if flt == "all" or self.status(s, labels) == flt]

    def counts_text(self) -> str:
        labels = read_labels(self.root)
        c = {k: 0 for k in ("accepted", "rejected", "unlabelled")}
        for s in self.subjects:
            c[self.status(s, labels)] += 1
        n = len(self.subjects)
        done = n - c["unlabelled"]
        pct = 100.0 * done / n if n else 100.0
        return f"**{n} subjects** · {c['accepted']} accepted · {c['rejected']} rejected · {c['unlabelled']} unlabelled · {pct:.0f}% labelled"

    def page(self, flt: str, page: int) -> tuple[list[tuple[str, str]], int, int]:
        """Gallery items (sheet path, caption) of one page, the clamped page index and the page count."""
        items = self.filtered(flt)
        pages = max(1, -(-len(items) // self.page_size))
        page = min(max(0, page), pages - 1)
        chunk = items[page * self.page_size : (page + 1) * self.page_size]
        sheets = ensure_sheets(self.manifest, chunk)
        labels = read_labels(self.root)
        return [(str(sheets[s]), f"{s} · {self.status(s, labels)}") for s in chunk], page, pages

    def step(self, flt: str, current: str | None, delta: int) -> str | None:
        """The subject ``delta`` places after ``current`` in the filtered list (by dataset order)."""
        items = self.filtered(flt)
        if not items:
            return None
        if current is None or current not in self.subjects:
            return items[0]
        pos = self.subjects.index(current)
        if delta > 0:
            after = [s for s in items if self.subjects.index(s) > pos]
            return after[0] if after else items[-1]
        before = [s for s in items if self.subjects.index(s) < pos]
        return before[-1] if before else items[0]

    def decide(self, subject: str | None, decision: str) -> None:
        if subject is None:
            raise ValueError("select a subject first")
        set_label(self.root, self.labeller, subject, decision)


def build_app(root: str | Path, labeller: str = "default", page_size: int = 24):
    """The Gradio Blocks page for dataset ``root``."""
    import gradio as gr

    session = LabelSession(root, labeller, page_size)

    def view(flt: str, page: int, subject: str | None) -> tuple[Any, ...]:
        items, page, pages = session.page(flt, page)
        if subject is not None:
            sheet = ensure_sheets(session.manifest, [subject])[subject]
            info = f"### {subject} — {session.status(subject)}"
        else:
            sheet, info = None, "### nothing selected"
        return (gr.Gallery(value=items), f"page {page + 1} / {pages}", page, session.counts_text(), sheet, info, subject)

    def on_load(flt, page, subject):
        return view(flt, page, subject or session.step(flt, None, 1))

    def on_filter(flt):
        return view(flt, 0, session.step(flt, None, 1))

    def on_select(flt, page, evt):
        items, page, _ = session.page(flt, page)
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        subject = items[index][1].split(" · ")[0] if 0 <= index < len(items) else None
        return view(flt, page, subject)

    # Gradio injects the event by annotation; this module postpones annotations, so set the class itself.
    on_select.__annotations__ = {"evt": gr.SelectData}

    def view_subject(flt, page, subject):
        """The view with ``subject`` selected, on the page that holds it (or ``page`` if it is filtered out)."""
        items = session.filtered(flt)
        page = items.index(subject) // session.page_size if subject in items else page
        return view(flt, page, subject)

    def on_step(delta):
        def fn(flt, page, subject):
            return view_subject(flt, page, session.step(flt, subject, delta))
        return fn

    def on_decide(decision):
        def fn(flt, page, subject):
            if subject is None:
                raise gr.Error("select a subject first")
            session.decide(subject, decision)
            return view_subject(flt, page, session.step(flt, subject, 1) if decision != "clear" else subject)
        return fn

    def on_page(delta):
        def fn(flt, page, subject):
            return view(flt, page + delta, subject)
        return fn

    with gr.Blocks(title=f"PanoLAM labels — {Path(root).name}") as app:
        page_state, subject_state = gr.State(0), gr.State(None)
        gr.Markdown(f"## Label subjects of `{root}` as **{labeller}**  \nkeys: `a` accept · `r` reject · `c` clear · `j`/→ next · `k`/← previous")
        counts = gr.Markdown(elem_id="counts")
        with gr.Row():
            flt = gr.Radio(list(FILTERS), value="all", label="show", elem_id="filter")
            page_label = gr.Markdown(elem_id="page-label")
        info = gr.Markdown(elem_id="selected")
        current = gr.Image(label="selected subject", interactive=False, elem_id="current", height=200)
        with gr.Row():
            prev_btn = gr.Button("← previous (k)", elem_id="prev-btn")
            accept_btn = gr.Button("accept (a)", variant="primary", elem_id="accept-btn")
            reject_btn = gr.Button("reject (r)", variant="stop", elem_id="reject-btn")
            clear_btn = gr.Button("clear (c)", elem_id="clear-btn")
            next_btn = gr.Button("next (j) →", elem_id="next-btn")
        gallery = gr.Gallery(label="subjects", columns=2, allow_preview=False, elem_id="gallery", object_fit="contain", height="auto")
        with gr.Row():
            prev_page = gr.Button("previous page", elem_id="prev-page")
            next_page = gr.Button("next page", elem_id="next-page")
        outputs = [gallery, page_label, page_state, counts, current, info, subject_state]
        state_in = [flt, page_state, subject_state]
        app.load(on_load, state_in, outputs)
        flt.change(on_filter, [flt], outputs)
        gallery.select(on_select, [flt, page_state], outputs)
        prev_btn.click(on_step(-1), state_in, outputs)
        next_btn.click(on_step(1), state_in, outputs)
        accept_btn.click(on_decide("accept"), state_in, outputs)
        reject_btn.click(on_decide("reject"), state_in, outputs)
        clear_btn.click(on_decide("clear"), state_in, outputs)
        prev_page.click(on_page(-1), state_in, outputs)
        next_page.click(on_page(1), state_in, outputs)
    return app


def launch(root: str | Path, labeller: str = "default", host: str = "127.0.0.1", port: int = 7861, block: bool = True, **kwargs: Any):
    """Serve the page; with ``block=False`` return the running app (tests call ``app.close()``)."""
    root = Path(root)
    load_manifest(root)  # fail early with a clear message if DIR is not a dataset
    sheet_dir(root).mkdir(parents=True, exist_ok=True)
    app = build_app(root, labeller)
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, js=KEY_JS,
               allowed_paths=[str(sheet_dir(root).resolve())], show_error=True, quiet=not block, **kwargs)
    return app
