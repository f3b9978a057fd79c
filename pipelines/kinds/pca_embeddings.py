#!/usr/bin/env python3
"""PCA of the embeddings an `embed` stage wrote: the projected points as a table, the share
of variance each component explains as metrics, and a scatter plot of the first two
components coloured by label, as a PNG drawn with numpy and zlib only (no matplotlib).

Run by the stage kind declared in pca_embeddings.yaml:
    pca_embeddings.py EMBEDDINGS_PARQUET OUT_DIR COMPONENTS
and the kind's other parameters from $CBOUND_PARAMS (params.json, defaults filled in).
"""
import json
import os
import struct
import sys
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Label colours (RGB), cycled; light enough that overlapping points stay visible.
PALETTE = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
    dtype=np.uint8,
)


def fail(message):
    print(f"pca_embeddings: {message}", file=sys.stderr)
    sys.exit(1)


def matrix(table, column):
    """A fixed_size_list<float> column as an (n, d) float64 array."""
    if column not in table.column_names:
        fail(f"the embeddings have no column `{column}` (columns: {', '.join(table.column_names)})")
    arr = table.column(column).combine_chunks()
    if not pa.types.is_fixed_size_list(arr.type):
        fail(f"column `{column}` is {arr.type}, not a fixed-size list of floats")
    d = arr.type.list_size
    return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(-1, d)


def pca(x, k, standardize):
    """Projections on the top k components, and the share of variance each explains."""
    x = x - x.mean(axis=0)
    if standardize:
        sd = x.std(axis=0)
        x = x / np.where(sd > 0, sd, 1.0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(k, vt.shape[0])
    # An eigenvector's sign is arbitrary: fix it (largest loading positive) so reruns and
    # other BLAS builds draw the same picture.
    signs = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    signs[signs == 0] = 1.0
    components = vt[:k] * signs[:, None]
    variance = s ** 2
    total = variance.sum()
    ratio = variance[:k] / total if total > 0 else np.zeros(k)
    return x @ components.T, ratio


def png_bytes(rgb):
    """An (h, w, 3) uint8 image as PNG: signature, IHDR, one IDAT, IEND."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def scatter(points, labels, size=480, margin=24):
    """The first two columns of `points` as coloured 3x3 dots in a framed square."""
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    inner = size - 2 * margin
    img[margin, margin:size - margin] = img[size - margin - 1, margin:size - margin] = 160
    img[margin:size - margin, margin] = img[margin:size - margin, size - margin - 1] = 160
    if len(points) == 0:
        return img
    xy = points[:, :2] if points.shape[1] >= 2 else np.column_stack([points[:, 0], np.zeros(len(points))])
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    cols = (margin + 2 + (xy[:, 0] - lo[0]) / span[0] * (inner - 5)).astype(int)
    rows = (size - margin - 3 - (xy[:, 1] - lo[1]) / span[1] * (inner - 5)).astype(int)
    colours = PALETTE[np.asarray(labels, dtype=np.int64) % len(PALETTE)]
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            img[rows + dr, cols + dc] = colours
    return img


def main():
    if len(sys.argv) != 4:
        fail("usage: pca_embeddings.py EMBEDDINGS_PARQUET OUT_DIR COMPONENTS")
    source, out, components = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(os.environ["CBOUND_PARAMS"]) as f:
        params = json.load(f)
    table = pq.read_table(source)
    if table.num_rows == 0:
        fail(f"{source} has no rows")
    epochs = table.column("epoch").to_numpy() if "epoch" in table.column_names else None
    if epochs is not None and params["epoch"] == "last":
        keep = epochs == epochs.max()
        table = table.filter(pa.array(keep))
        epochs = epochs[keep]
    x = matrix(table, params["column"])
    labels = table.column("label").to_numpy() if "label" in table.column_names else np.zeros(len(x), dtype=np.int64)

    # Each snapshot (epoch) gets its own PCA: encoders of different epochs share no basis.
    groups = [None] if epochs is None else sorted(set(epochs.tolist()))
    blocks, metrics = [], {}
    last = None
    for epoch in groups:
        rows = np.ones(len(x), dtype=bool) if epoch is None else epochs == epoch
        proj, ratio = pca(x[rows], components, params["standardize"])
        block = {}
        if epoch is not None:
            block["epoch"] = pa.array(np.full(rows.sum(), epoch, dtype=np.int64))
        for name in ("id", "label"):
            if name in table.column_names:
                block[name] = table.column(name).filter(pa.array(rows)).combine_chunks()
        for j in range(proj.shape[1]):
            block[f"pc{j + 1}"] = pa.array(proj[:, j])
        blocks.append(pa.table(block))
        last = (proj, labels[rows], ratio)
    pq.write_table(pa.concat_tables(blocks), os.path.join(out, "pca.parquet"))

    proj, plot_labels, ratio = last
    # The plot: the last snapshot, at most max_points points (the first ones: deterministic).
    limit = params["max_points"]
    with open(os.path.join(out, "pca.png"), "wb") as f:
        f.write(png_bytes(scatter(proj[:limit], plot_labels[:limit])))
    for j, r in enumerate(ratio):
        metrics[f"explained_variance_pc{j + 1}"] = float(r)
    metrics["explained_variance_total"] = float(np.sum(ratio))
    metrics["points"] = float(len(proj))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f)


if __name__ == "__main__":
    main()
