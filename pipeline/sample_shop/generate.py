"""Generate the sample shop: items, users and events following the shop data contract.

    python -m pipeline.sample_shop --out sample_shop --seed 0 --scale 1 --format csv

Writes items.<ext>, users.<ext>, events.<ext> and manifest.json (seed, scale, counts, generator
version). Deterministic: the same seed and scale give byte-identical files. Scale 1 gives
about 5,200 items, 2,400 users and 100,000+ events; events grow linearly with the scale, items
and users with its square root (--scale 10: 1M+ events).
"""
import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract import spec
from pipeline.sample_shop.behaviour import make_events
from pipeline.sample_shop.catalog import make_catalog
from pipeline.sample_shop.config import FORMATS, GENERATOR_VERSION, SampleConfig, shop_sizes
from pipeline.sample_shop.users import make_users


def _check_args(seed, scale, fmt, cfg: SampleConfig) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if (isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating))
            or not math.isfinite(scale) or not 0 < scale <= cfg.max_scale):
        raise ValueError(f"scale must be a number > 0 and <= {cfg.max_scale:g}, got {scale!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _csv_cells(column: pd.Series) -> list:
    """Text of one column: true/false, 2-decimal prices, empty for missing values."""
    if column.dtype == bool:
        return np.where(column.to_numpy(), "true", "false").tolist()
    if pd.api.types.is_float_dtype(column):
        return [f"{v:.2f}" for v in column.to_numpy()]
    if pd.api.types.is_integer_dtype(column):
        missing = column.isna().to_numpy()
        text = column.fillna(0).to_numpy(dtype=np.int64).astype(str)
        return np.where(missing, "", text).tolist()
    return column.fillna("").astype(str).tolist()


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(frame.columns)
            writer.writerows(zip(*(_csv_cells(frame[c]) for c in frame.columns)))
    elif fmt == "parquet":
        frame.to_parquet(path, index=False, engine="pyarrow")
    else:
        text = frame.to_json(orient="records", lines=True, force_ascii=False)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")


def _prepare_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    # A shop folder must hold one format only: drop our own files of other formats.
    for name in spec.TABLE_NAMES:
        for ext in FORMATS:
            (out_dir / f"{name}.{ext}").unlink(missing_ok=True)


def draw_population(seed: int, scale: float, cfg: SampleConfig = SampleConfig()):
    """(catalog, users, the events' generator) of a seed and scale: the draws before the
    events, so the users' latent tastes can be recovered without writing a shop
    (pipeline/sample_shop/truth.py)."""
    sizes = shop_sizes(scale, cfg)
    catalog_rng, users_rng, events_rng = (np.random.default_rng(s) for s in
                                          np.random.SeedSequence(seed).spawn(3))
    catalog = make_catalog(catalog_rng, sizes["items"], cfg)
    return catalog, make_users(users_rng, sizes["users"], catalog, cfg), events_rng


def generate_shop(out_dir, seed: int = 0, scale: float = 1.0, fmt: str = "csv",
                  progress: bool = False, cfg: SampleConfig = SampleConfig()) -> dict:
    """Write a sample shop to `out_dir`; return counts (items, users, events, sessions,
    cold_items and one entry per event type)."""
    _check_args(seed, scale, fmt, cfg)
    out_dir = Path(out_dir)
    _prepare_dir(out_dir)
    sizes = shop_sizes(scale, cfg)
    catalog, users, events_rng = draw_population(seed, scale, cfg)
    events, n_sessions = make_events(events_rng, catalog, users, sizes["sessions"], cfg,
                                     progress)
    tables = {"items": catalog.table, "users": users.table, "events": events}
    for name, frame in tables.items():
        _write(frame, out_dir / f"{name}.{fmt}", fmt)
    by_type = events["event_type"].value_counts()
    counts = {"items": len(catalog.table), "users": len(users.table), "events": len(events),
              "sessions": n_sessions, "cold_items": int(catalog.cold.sum())}
    counts.update({t: int(by_type.get(t, 0)) for t in spec.EVENT_TYPES})
    manifest = {
        "generator": "pipeline.sample_shop.generate", "generator_version": GENERATOR_VERSION,
        "seed": int(seed), "scale": float(scale), "format": fmt,
        "time_range": {"start": cfg.start, "end": cfg.end},
        "files": {name: f"{name}.{fmt}" for name in spec.TABLE_NAMES}, "counts": counts,
    }
    with open(out_dir / "manifest.json", "w", encoding="utf-8", newline="\n") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
    return counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.sample_shop",
        description="Generate a deterministic sample shop (items, users, events).")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--seed", default="0", help="random seed, integer >= 0 (default 0)")
    parser.add_argument("--scale", default="1", help="size factor > 0; 1 = ~100k events, "
                        "10 = ~1M events (default 1)")
    parser.add_argument("--format", default="csv", dest="fmt",
                        help=f"file format: {' | '.join(FORMATS)} (default csv)")
    return parser


def main(argv=None) -> int:
    """CLI entry point; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        seed = int(args.seed)
    except ValueError:
        parser.error(f"--seed must be a non-negative integer, got {args.seed!r}")
    try:
        scale = float(args.scale)
    except ValueError:
        parser.error(f"--scale must be a number > 0, got {args.scale!r}")
    try:
        _check_args(seed, scale, args.fmt, SampleConfig())
    except ValueError as err:
        parser.error("--" + str(err))
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")
    began = time.perf_counter()
    counts = generate_shop(args.out, seed=seed, scale=scale, fmt=args.fmt, progress=True)
    print(f"wrote {args.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items())
          + f" in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
