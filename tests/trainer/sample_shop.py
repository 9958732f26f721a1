"""A small generated sample shop (pipeline.sample_shop.generate) with planted cold items, as the
pipeline's raw examples and their Transform output (pipeline/in_process.py)."""
import os
import types

from pipeline import in_process as shop_examples
from pipeline.sample_shop.generate import generate_shop
from trainer import features as F

# Cold items: in the catalog with real text, never in any event (id, title, brand, category).
PLANTED = (
    ("planted_lipstick", "Nova Red Matte Lipstick", "Nova", "Beauty > Makeup > Lips"),
    ("planted_tent", "Trailhead Green 2-Person Dome Tent", "Trailhead",
     "Sports > Outdoor > Camping"),
)


def build(root: str, seed: int = 3, scale: float = 0.05):
    """Generates the shop, writes and transforms its examples under `root`. Returns a
    namespace: transform_graph, examples (transformed Split-* dirs), raw, rows {split: [raw
    example dicts]}, items {item_id: item features}, planted (cold item ids)."""
    shop_dir = os.path.join(root, "shop")
    generate_shop(shop_dir, seed=seed, scale=scale)
    planted = [{"item_id": item_id, "title": title, "brand": brand, "categories": category,
                "description": f"{title} by {brand}.", "price": 19.99, "in_stock": True,
                "created_at": 0} for item_id, title, brand, category in PLANTED]
    raw = os.path.join(root, "raw")
    rows = shop_examples.write_examples(shop_dir, raw, extra_items=planted)
    graph_dir, examples_dir = shop_examples.transform(raw, root)
    return types.SimpleNamespace(root=root, raw=raw, transform_graph=graph_dir,
                                 examples=examples_dir, items=rows.pop("items"), rows=rows,
                                 planted=[p[0] for p in PLANTED],
                                 catalog_size=len(rows[F.CATALOG_SPLIT]))
