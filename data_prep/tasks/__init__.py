"""Fine-tuning task builders: raw task files -> ``{split}.x/.y/.pmid`` text, binarised pairs, dicts, manifest.

Each builder is ``build(raw_dir, out_dir, tokenizer, *, workers, options) -> summary dict``; ``options`` is the
``conf/data_prep/dataset/<name>.yaml`` node (minus ``name``). With ``tokenizer=None`` only the text files and the
manifest are written. ``build_splits(raw_dir, options)`` in each module gives the text without writing anything.
"""

from __future__ import annotations

from data_prep.tasks import bc5cdr, ddi, hoc, kd_dti, pubmedqa

BUILDERS = {
    "bc5cdr": bc5cdr.build,
    "kd_dti": kd_dti.build,
    "ddi": ddi.build,
    "pubmedqa": pubmedqa.build,
    "hoc": hoc.build,
}

# The text-only half of each builder (no tokenizer, nothing written), for inspection and tests.
SPLIT_BUILDERS = {
    "bc5cdr": bc5cdr.build_splits,
    "kd_dti": kd_dti.build_splits,
    "ddi": ddi.build_splits,
    "pubmedqa": pubmedqa.build_splits,
    "hoc": hoc.build_splits,
}
