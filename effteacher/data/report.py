"""The `check` command: scan every split of a dataset and print a rich report of what is usable."""

from __future__ import annotations

from typing import Any

import numpy as np

from effteacher.errors import DatasetError

MAX_MESSAGES = 100


def run_check(data: str) -> dict[str, Any]:
    """Validate a dataset YAML: per split images/backgrounds/corrupt/duplicates/instances, per class
    instances, the unlabeled count and every problem message (first ``MAX_MESSAGES``).

    Returns ``{"splits": {name: ScanResult}, "instances": {split: (nc,) int array}}``. Raises
    DatasetError after the report when train has no usable labeled image.
    """
    from rich.table import Table
    from rich.markup import escape

    from effteacher.data.dataset import _scan
    from effteacher.data.spec import load_spec
    from effteacher.utils.console import console

    spec = load_spec(data)
    con = console()
    scans, inst = {}, {}
    for key in ("train", "val", "test"):
        srcs = getattr(spec, key)
        if srcs:
            scans[key] = _scan(srcs, spec.names, None, progress=True, quiet=True)
            recs = scans[key].records
            cls = np.concatenate([r.cls for r in recs] + [np.zeros(0, np.int64)])
            inst[key] = np.bincount(cls, minlength=spec.nc)[: spec.nc]
    if spec.unlabeled:
        scans["unlabeled"] = _scan(spec.unlabeled, None, None, progress=True, quiet=True)

    t = Table(title=f"Dataset {spec.yaml_path} (root {spec.root})")
    for col in ("Split", "Images", "Usable", "Backgrounds", "Corrupt", "Duplicates", "Instances"):
        t.add_column(col, justify="left" if col == "Split" else "right")
    for key, r in scans.items():
        n_inst = str(int(inst[key].sum())) if key in inst else "-"
        bg = str(r.n_background) if key in inst else "-"
        t.add_row(key, str(r.n_found), str(len(r.records)), bg, str(r.n_corrupt), str(r.n_duplicates), n_inst)
    con.print(t)

    c = Table(title="Instances per class")
    c.add_column("Class")
    for key in inst:
        c.add_column(key, justify="right")
    for i, nm in enumerate(spec.names):
        c.add_row(f"{i} {escape(nm)}", *[str(int(inst[k][i])) for k in inst])
    con.print(c)

    msgs = [m for r in scans.values() for m in r.messages]
    for m in msgs[:MAX_MESSAGES]:
        con.print(f"[yellow]WARNING[/yellow] {escape(m)}")
    if len(msgs) > MAX_MESSAGES:
        con.print(f"... and {len(msgs) - MAX_MESSAGES} more problems")
    unl = len(scans["unlabeled"].records) if "unlabeled" in scans else 0
    con.print(f"{len(msgs)} problems; {unl} extra unlabeled images; train: {scans['train'].summary()}")
    for key in ("train", "val"):
        if key in inst and inst[key].sum() == 0:
            raise DatasetError(f"{spec.yaml_path}: {key} has no usable labeled image ({scans[key].summary()}); "
                               "see the problems above")
    return {"splits": scans, "instances": inst}
